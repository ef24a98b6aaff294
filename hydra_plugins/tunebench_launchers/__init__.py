"""tunebench's Hydra launchers (Hydra discovers launchers in the hydra_plugins namespace only)."""
