"""Per-task capabilities: HMAC-SHA256 tokens bound to task ids and an expiry.

A token is ``<expiry>.<base64url signature>``; the signature covers the expiry and the sorted ids,
so a token for task A never opens task B. The ids are not in the token: the verifier names the
task it is asked to open, and a workflow's token is checked against the workflow's ids.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Iterable


def _signature(key: bytes, ids: Iterable[str], expiry: int) -> str:
    message = f"{expiry}|{'|'.join(sorted(ids))}".encode()
    digest = hmac.digest(key, message, "sha256")  # one call into OpenSSL: no HMAC object
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(key: bytes, ids: Iterable[str], ttl: int, now: float | None = None) -> str:
    """A token that opens exactly ``ids`` until ``ttl`` seconds from now."""
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_signature(key, ids, expiry)}"


def verify(keys: Iterable[bytes], token: str, ids: Iterable[str], now: float | None = None) -> bool:
    """True when ``token`` was issued for exactly ``ids`` by one of ``keys`` and has not expired."""
    expiry_text, _, signature = token.partition(".")
    if not expiry_text.isdigit() or not signature:
        return False
    expiry = int(expiry_text)
    if expiry < (time.time() if now is None else now):
        return False
    id_list = list(ids)
    return any(hmac.compare_digest(_signature(key, id_list, expiry), signature) for key in keys)
