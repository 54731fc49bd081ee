# myapp/logship.py: imported by create_app(), or named in LOGGING with ext://
import logging
import os

from batchdispatch import BackgroundDispatcher
from batchdispatch.handlers import BatchHandler
from batchdispatch.http import HttpSink

dispatcher = BackgroundDispatcher(HttpSink(os.environ["LOG_URL"]), delay=1.0)


def install(level=logging.INFO):
    root = logging.getLogger()
    if not any(isinstance(h, BatchHandler) for h in root.handlers):
        root.addHandler(BatchHandler(dispatcher, level))
