# analytics/events.py
import functools

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.django import ModelSink

from .models import PageView


@functools.cache
def page_views():
    return BackgroundDispatcher(ModelSink(PageView), delay=1.0, max_batch_size=500,
                                retry=RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=30))
