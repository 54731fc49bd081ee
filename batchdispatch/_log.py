"""The package logger's own handler: reports reach a person even where logging is not configured.

Libraries usually give their logger a :class:`logging.NullHandler`, which
keeps them silent until the application configures logging. For
batchdispatch that silence would hide the very reports that say items were
dropped or given up. :class:`_LastResort` does what Python does for a
logger with no handlers at all: while no other handler would see a record,
it hands WARNING and above to :data:`logging.lastResort` (stderr). Once
the application configures logging (a handler on the root logger, or on a
``batchdispatch`` logger), it says nothing more.
"""

from __future__ import annotations

import logging

__all__ = ["_LastResort"]


class _LastResort(logging.Handler):
    """Pass WARNING and above to :data:`logging.lastResort` while no other handler would see them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        fallback = logging.lastResort
        if fallback is None or record.levelno < fallback.level:
            return  # the application turned the last resort off, or raised its level
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return  # configured: that handler has the record
            if not logger.propagate:
                break
            logger = logger.parent
        fallback.handle(record)
