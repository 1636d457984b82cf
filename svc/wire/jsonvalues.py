"""Which values JSON carries exactly between svc's processes and its clients, and what becomes of the rest.

svc encodes with orjson, which refuses integers outside [-2**63, 2**64 - 1] and strings holding a lone
surrogate, and writes NaN and ±Infinity as ``null``. Celery's own JSON (the stdlib's) carries all of them,
so a task can return a value svc cannot forward as it is. The rule, in one place:

- arguments that would not arrive exactly are refused before anything is enqueued (422 at submit);
- an event field that cannot be carried exactly is replaced, never dropped and never a failure to publish:
  the task's own values (``result``, ``progress``) become ``null`` beside a ``<field>_repr`` holding
  Python's ``repr`` of the value (the exact value stays in Celery's result backend, where
  ``AsyncResult.get()`` reads it); a descriptive string (a name, an error message) keeps its text with
  each lone surrogate written out as ``\\udXXX``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

OPTIONS = orjson.OPT_NON_STR_KEYS
PAYLOAD_FIELDS = frozenset({"result", "progress"})  # the task's own values: marked, never rewritten


def _default(value: object) -> str:
    return repr(value)


def dumps(value: Any) -> bytes:
    """orjson's encoding as svc uses it everywhere (types it does not know become their repr)."""
    return orjson.dumps(value, default=_default, option=OPTIONS)


def has_non_finite(value: Any) -> bool:
    """True when a NaN or an infinite float is anywhere inside ``value`` (lists, tuples, dicts)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def inexact_reason(value: Any) -> str | None:
    """Why ``value`` would not arrive exactly as JSON (for a 422), or None when it would."""
    try:
        text = dumps(value)
    except TypeError as exc:
        return "a string with a lone surrogate" if "surrogate" in str(exc) else "an integer beyond 64 bits"
    if b"null" in text and has_non_finite(value):
        return "NaN or Infinity"
    return None


def printable(text: str) -> str:
    """``text`` with every lone surrogate written out as ``\\udXXX`` (the rest unchanged)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def carried(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with each top-level field JSON cannot carry exactly replaced as the module says."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, str) and key not in PAYLOAD_FIELDS:
            out[key] = printable(value)
        elif isinstance(value, dict) and key == "error":
            out[key] = {printable(str(k)): printable(str(v)) for k, v in value.items()}
        elif value is None or inexact_reason(value) is None:
            out[key] = value
        else:
            out[key] = None
            out[f"{key}_repr"] = printable(repr(value))
    return out
