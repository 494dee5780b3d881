"""The sync engine: a day's run, the batch drainer both runs and repairs use, and repairs."""
