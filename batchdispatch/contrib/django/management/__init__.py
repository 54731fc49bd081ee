"""Management commands of the batchdispatch Django app."""
