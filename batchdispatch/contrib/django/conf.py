"""Read and check the ``BATCHDISPATCH`` setting.

The setting is read at the moment it is needed, never at import, so that
``override_settings`` in tests takes effect. One function, :func:`resolve`,
checks an alias's options with the library's own validators; the system
checks report its problems and the handler raises the first of them, so
the rules are written once.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, List, Mapping, Optional, Tuple

from django.conf import settings  # type: ignore[import-untyped]

from ... import _validate
from ...http import _check_headers, _check_max_body_bytes, _check_secret, _check_signature, _check_url
from .. import _options

#: The name of the Django setting.
SETTING = "BATCHDISPATCH"

#: Every option an alias may set, with its default (URL has none).
DEFAULTS: Mapping[str, Any] = _options.DEFAULTS

#: The system check id each option's errors are reported under.
CHECK_IDS: Mapping[str, str] = {
    "URL": "batchdispatch.E003",
    "DELAY": "batchdispatch.E004",
    "MAX_BATCH_SIZE": "batchdispatch.E004",
    "MAX_QUEUE_SIZE": "batchdispatch.E004",
    "EXIT_TIMEOUT": "batchdispatch.E004",
    "OVERFLOW": "batchdispatch.E005",
    "HEADERS": "batchdispatch.E006",
    "SECRET": "batchdispatch.E007",
    "SIGNATURE": "batchdispatch.E007",
    "MAX_BODY_BYTES": "batchdispatch.E004",
    "SPOOL": "batchdispatch.E008",
    "SPOOL_DURABLE": "batchdispatch.E008",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the setting: a check id, where, and what."""

    id: str
    message: str
    hint: Optional[str] = None

    @property
    def is_error(self) -> bool:
        return ".E" in self.id


@dataclasses.dataclass(frozen=True)
class AliasOptions:
    """An alias's options, checked and with defaults filled in."""

    alias: str
    url: str
    delay: float
    max_batch_size: Optional[int]
    max_queue_size: Optional[int]
    overflow: str
    headers: Optional[Mapping[str, str]]
    secret: Any
    exit_timeout: float
    signature: str = "standard"
    max_body_bytes: Optional[int] = None
    spool: Optional[str] = None
    spool_durable: bool = False


def configured() -> Any:
    """The raw ``BATCHDISPATCH`` setting ({} when it is not set)."""
    return getattr(settings, SETTING, {})


def aliases() -> List[str]:
    """The configured aliases, in the setting's order ([] if the setting is not a dict)."""
    value = configured()
    return [str(alias) for alias in value] if isinstance(value, Mapping) else []


def _option_checks(options: Mapping[Any, Any]) -> Dict[str, Any]:
    signature = _options.signature_for_secret(options.get("SIGNATURE", DEFAULTS["SIGNATURE"]))
    return {
        "URL": lambda v: _check_url(v, "URL"),
        "DELAY": lambda v: _validate.seconds("DELAY", v),
        "MAX_BATCH_SIZE": lambda v: _validate.count("MAX_BATCH_SIZE", v),
        "MAX_QUEUE_SIZE": lambda v: _validate.count("MAX_QUEUE_SIZE", v),
        "OVERFLOW": _validate.overflow_policy,
        "HEADERS": lambda v: None if v is None else dict(_check_headers(v, "HEADERS")),
        "SECRET": lambda v: _check_secret(v, "SECRET", signature),
        "SIGNATURE": lambda v: _check_signature(v, "SIGNATURE"),
        "MAX_BODY_BYTES": lambda v: _check_max_body_bytes(v, "MAX_BODY_BYTES"),
        "EXIT_TIMEOUT": lambda v: _validate.seconds("EXIT_TIMEOUT", v, allow_zero=True),
        "SPOOL": lambda v: _options.check_spool(v, "SPOOL"),
        "SPOOL_DURABLE": lambda v: _options.check_spool_durable(v, "SPOOL_DURABLE"),
    }


def resolve(alias: Any, options: Any) -> Tuple[Optional[AliasOptions], List[Problem]]:
    """Check one alias's *options*; return them resolved (None if any is wrong) and the problems."""
    where = f"{SETTING}[{alias!r}]"
    if not isinstance(options, Mapping):
        return None, [Problem("batchdispatch.E002",
                              f"{where} must be a dict of options, got {type(options).__name__}")]
    problems: List[Problem] = []
    for key in options:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), list(DEFAULTS), n=1)
            problems.append(Problem(
                "batchdispatch.W001", f"{where} has an unknown option {key!r}; it is ignored",
                hint=f"Did you mean {close[0]!r}?" if close else f"Known options: {', '.join(DEFAULTS)}.",
            ))
    if options.get("URL") is None:
        problems.append(Problem("batchdispatch.E003", f"{where} has no URL",
                                hint="Set 'URL' to the http:// or https:// address to POST batches to."))
    values: Dict[str, Any] = {}
    for key, check in _option_checks(options).items():
        value = options.get(key, DEFAULTS[key])
        if key == "URL" and value is None:
            continue
        try:
            values[key] = check(value)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(CHECK_IDS[key], f"{where}[{key!r}]: {exc}"))
    if values.get("OVERFLOW") == "spill" and "SPOOL" in values:
        try:
            _options.check_overflow_spool("spill", values["SPOOL"], "OVERFLOW", "SPOOL")
        except ValueError as exc:
            problems.append(Problem(CHECK_IDS["OVERFLOW"], f"{where}['OVERFLOW']: {exc}"))
    if any(p.is_error for p in problems):
        return None, problems
    return AliasOptions(
        alias=str(alias), url=values["URL"], delay=values["DELAY"],
        max_batch_size=values["MAX_BATCH_SIZE"], max_queue_size=values["MAX_QUEUE_SIZE"],
        overflow=values["OVERFLOW"], headers=values["HEADERS"], secret=values["SECRET"],
        exit_timeout=values["EXIT_TIMEOUT"], spool=values["SPOOL"], spool_durable=values["SPOOL_DURABLE"],
        signature=values["SIGNATURE"], max_body_bytes=values["MAX_BODY_BYTES"],
    ), problems


def problems() -> List[Problem]:
    """Everything wrong with the whole setting, for the system checks."""
    value = configured()
    if not isinstance(value, Mapping):
        return [Problem("batchdispatch.E001",
                        f"{SETTING} must be a dict of aliases to options, got {type(value).__name__}",
                        hint=f'{SETTING} = {{"default": {{"URL": "https://..."}}}}')]
    found: List[Problem] = []
    for alias, options in value.items():
        found.extend(resolve(alias, options)[1])
    return found
