"""Dataset builder (`python -m datasets_gen`): turns a user's documents or catalog into the dataset
format the harness reads (train.jsonl, eval.jsonl, corpus.jsonl, card.json; see harness/core/data.py).
Backends and recipes arrive with their own issue."""
