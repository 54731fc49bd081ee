"""``manage.py batchdispatch_stats``."""
