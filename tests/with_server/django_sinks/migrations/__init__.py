"""The migrations of the ModelSink tests' app."""
