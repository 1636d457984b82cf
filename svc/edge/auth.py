"""Who may do what: API keys for HTTP calls, per-task tokens for one task's events, state and cancel."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from svc.edge import tokens
from svc.errors import Forbidden, Unauthorized
from svc.settings import Settings


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header, if that is its form."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def has_api_key(settings: Settings, authorization: str | None) -> bool:
    """True when the header carries one of the configured keys (constant-time comparison)."""
    presented = bearer(authorization)
    if presented is None:
        return False
    found = False
    for key in settings.api_keys:
        found |= hmac.compare_digest(key.encode(), presented.encode())
    return found


def require_api_key(settings: Settings, authorization: str | None) -> None:
    """Raise Unauthorized (401) unless auth is off or a configured key is shown."""
    if settings.auth_enabled and not has_api_key(settings, authorization):
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")


WorkflowLookup = Callable[[str], Awaitable[str | None]]


async def require_task_access(
    settings: Settings,
    task_id: str,
    token: str | None,
    authorization: str | None,
    workflow_of: WorkflowLookup | None = None,
) -> None:
    """Raise unless auth is off, an API key is shown, or ``token`` opens ``task_id`` — its own token,
    or the token of the workflow it is a step of."""
    if not settings.auth_enabled or has_api_key(settings, authorization):
        return
    if token is None:
        raise Unauthorized("an API key or this task's token is required")
    keys = settings.signing_keys
    if tokens.verify(keys, token, [task_id]):
        return
    workflow_id = await workflow_of(task_id) if workflow_of is not None else None
    if workflow_id is None or not tokens.verify(keys, token, [workflow_id]):
        raise Forbidden("the token does not open this task, or it has expired")


def client_identity(settings: Settings, authorization: str | None, host: str | None) -> str:
    """Who is asking, for per-client limits: the API key shown, else the client's address."""
    if settings.auth_enabled and has_api_key(settings, authorization):
        return f"key:{bearer(authorization)}"
    return f"ip:{host or 'unknown'}"


def issue_token(settings: Settings, *task_ids: str) -> str:
    """A token that opens exactly these task ids for SVC_TOKEN_TTL seconds."""
    return tokens.issue(settings.signing_keys[0], task_ids, settings.token_ttl)


def plausible_token(token: str | None) -> bool:
    """True for an unexpired token of the right form (a /ws handshake; each subscribe is verified fully)."""
    if not token:
        return False
    expiry, _, signature = token.partition(".")
    return expiry.isdigit() and int(expiry) >= time.time() and len(signature) >= 40
