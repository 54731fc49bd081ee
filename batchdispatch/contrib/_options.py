"""What the Flask and Django integrations share: their options and how a dispatcher is built from them."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from .._dispatcher import BackgroundDispatcher
from ..http import HttpSink

#: Every option (without the framework's prefix) and its default; URL has none.
DEFAULTS: Mapping[str, Any] = {
    "URL": None,
    "DELAY": 0.1,
    "MAX_BATCH_SIZE": None,
    "MAX_QUEUE_SIZE": 100_000,
    "OVERFLOW": "drop_newest",
    "HEADERS": None,
    "SECRET": None,
    "EXIT_TIMEOUT": 5.0,
}


def build(
    name: str,
    *,
    url: str,
    headers: Optional[Mapping[str, str]],
    secret: Optional[str],
    **dispatcher_options: Any,
) -> Tuple[BackgroundDispatcher[Any], HttpSink]:
    """An HttpSink and the BackgroundDispatcher over it; the sink is closed again if the dispatcher fails."""
    sink = HttpSink(url, headers=headers, secret=secret)
    try:
        return BackgroundDispatcher(sink, name=name, **dispatcher_options), sink
    except BaseException:
        sink.close()
        raise
