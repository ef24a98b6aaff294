"""tunebench's sweep harness: which small LLM, tuned how, is the cheapest one good enough for a task."""

# Part of every run key: bump it when a change alters what a cell computes, so old results are not reused.
__version__ = "0.1.0"
