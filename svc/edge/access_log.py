"""Task tokens stay out of the server's logs: they travel in query strings (``?token=…``), and uvicorn
logs request lines on ``uvicorn.access``, WebSocket handshakes (accepted, refused) on ``uvicorn.error``
and, at trace level, whole ASGI scopes on ``uvicorn.asgi``.

svc's app installs the filter when its lifespan starts, so the tokens are redacted however the app is
served (``svc api``, or ``uvicorn svc.demo:app``), once uvicorn has configured its loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn.asgi")
_TOKEN = re.compile(r"(token=)[^&\s'\"]+")


class RedactTokens(logging.Filter):
    """Replace every ``token=<value>`` in a record's message and arguments with ``token=[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in record.args.items()}
        return True


def redact_request_logs() -> None:
    """Put ``RedactTokens`` on every logger uvicorn writes request lines to (once per logger)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
            logger.addFilter(RedactTokens())


def redact(text: str) -> str:
    """``text`` with every token value replaced."""
    return _TOKEN.sub(r"\1[redacted]", text)


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact(arg) if "token=" in arg else arg
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = str(arg)  # a scope dict or a bytes query string: its text is what the log line shows
    return redact(text) if "token=" in text else arg
