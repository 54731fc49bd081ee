"""What the Flask and Django integrations share: their options and how a dispatcher is built from them."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from .. import _validate
from .._dispatcher import BackgroundDispatcher
from ..exceptions import SpoolError
from ..http import SIGNATURES, HttpSink
from ..spool import SqliteSpool

#: Every option (without the framework's prefix) and its default; URL has none.
DEFAULTS: Mapping[str, Any] = {
    "URL": None,
    "DELAY": 0.1,
    "MAX_BATCH_SIZE": None,
    "MAX_QUEUE_SIZE": 100_000,
    "OVERFLOW": "drop_newest",
    "HEADERS": None,
    "SECRET": None,
    "SIGNATURE": "standard",
    "MAX_BODY_BYTES": None,
    "EXIT_TIMEOUT": 5.0,
    "SPOOL": None,
    "SPOOL_DURABLE": False,
}


def signature_for_secret(value: Any) -> str:
    """The scheme a SECRET is checked for: SIGNATURE if it is valid (else its own error reports it)."""
    return value if value in SIGNATURES else "standard"


def check_spool(value: Any, key: str) -> Optional[str]:
    """The spool file's path (None: no spool), checked as SqliteSpool checks it. Errors name *key*."""
    if value is None:
        return None
    try:
        return _validate.spool_path(value)
    except TypeError as exc:
        raise TypeError(f"{key}: {exc}") from None
    except (ValueError, SpoolError) as exc:
        raise ValueError(f"{key}: {exc}") from None


def check_spool_durable(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be True or False, got {type(value).__name__}")
    return value


def check_overflow_spool(overflow: str, spool: Optional[str], key: str, spool_key: str) -> None:
    if overflow == "spill" and spool is None:
        raise ValueError(f"{key}='spill' needs {spool_key}: the file items over the queue limit go to")


def build(
    name: str,
    *,
    url: str,
    headers: Optional[Mapping[str, str]],
    secret: Any,
    signature: str = "standard",
    max_body_bytes: Optional[int] = None,
    spool: Optional[str] = None,
    spool_durable: bool = False,
    **dispatcher_options: Any,
) -> Tuple[BackgroundDispatcher[Any], HttpSink]:
    """An HttpSink and the BackgroundDispatcher over it (with a SqliteSpool at *spool*, if given).

    The sink (and spool) are closed again if the dispatcher fails.
    """
    sink = HttpSink(url, headers=headers, secret=secret, signature=signature, max_body_bytes=max_body_bytes)
    opened: Optional[SqliteSpool] = None
    try:
        if spool is not None:
            opened = SqliteSpool(spool, durable=spool_durable)
        return BackgroundDispatcher(sink, name=name, spool=opened, **dispatcher_options), sink
    except BaseException:
        sink.close()
        if opened is not None:
            opened.close()
        raise


def close(dispatcher: BackgroundDispatcher[Any], sink: HttpSink) -> None:
    """Close what build opened for a dispatcher that has stopped: its sink, and its spool."""
    sink.close()
    if isinstance(dispatcher.spool, SqliteSpool):  # the only kind build opens
        dispatcher.spool.close()
