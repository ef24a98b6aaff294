"""hydra/sweeper=tunebench: a search on Optuna whose trials are cells, pruned inside their training (Hydra discovers
sweepers in the hydra_plugins namespace only)."""
