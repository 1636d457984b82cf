"""``AsyncClient``: svc's API from Python, for services, CLIs, notebooks and tests talking to a remote
svc. HTTP calls go over one httpx connection pool; every watched task shares one multiplexed
WebSocket (svc.client.socket), opened when the first is watched.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx
import orjson

from svc.client.errors import NetworkError, http_error
from svc.client.socket import MuxSocket
from svc.client.tasks import AsyncTask


class AsyncClient:
    """A client of one svc API at ``base_url`` (its origin, or the prefix it is mounted under:
    ``http://host:8000/svc``). ``api_key`` is sent as ``Authorization: Bearer`` on every call and on
    the WebSocket handshake; without one, task tokens (from submit) open their tasks.

    ``timeout``: seconds an HTTP call may take; ``connect_timeout``: seconds a WebSocket connect may
    take before it is retried; ``idle_timeout``: seconds the socket stays open once nothing is watched.
    Use it as ``async with AsyncClient(url) as client`` (or call ``aclose()``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        idle_timeout: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        ws_url = "ws" + self.base_url.removeprefix("http") + "/ws"
        self.socket = MuxSocket(ws_url, headers, idle_timeout, connect_timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the socket and the HTTP pool; handles still waiting raise."""
        await self.socket.close()
        await self._http.aclose()

    async def submit(
        self,
        name: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTask:
        """``POST /tasks/{name}``: enqueue an exposed task; its handle (watched once asked for its result,
        events or streams). ``options``: ``countdown``, ``eta``, ``expires``, ``priority``, ``queue``."""
        body = {"args": list(args), "kwargs": kwargs or {}, "options": options or {}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        accepted = await self.request("POST", f"/tasks/{name}", body=body, headers=headers)
        return AsyncTask(self, accepted["task_id"], accepted.get("token"), accepted.get("name", name))

    async def workflow(self, **plan: Any) -> AsyncTask:
        """``POST /workflows`` with ``chain=[…]``, ``group=[…]`` or a chord (the SPEC's body); the
        workflow's handle (its events carry every step's; ``step_ids`` lists the steps)."""
        accepted = await self.request("POST", "/workflows", body=plan)
        handle = AsyncTask(self, accepted["workflow_id"], accepted.get("token"), accepted.get("kind"))
        handle.step_ids = list(accepted.get("task_ids") or [])  # type: ignore[attr-defined]
        return handle

    def task(self, task_id: str, token: str | None = None) -> AsyncTask:
        """A handle on a task submitted elsewhere (its token, or this client's API key, opens it)."""
        return AsyncTask(self, task_id, token)

    async def tasks(self) -> list[dict[str, Any]]:
        """``GET /tasks``: the exposed tasks with their argument schemas."""
        catalogue = await self.request("GET", "/tasks")
        tasks: list[dict[str, Any]] = catalogue["tasks"] if isinstance(catalogue, dict) else catalogue
        return tasks

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One HTTP call to a route of the API; its JSON answer, or the typed HttpError."""
        params = {key: value for key, value in (query or {}).items() if value is not None}
        content = None if body is None else orjson.dumps(body)
        sent = {"Content-Type": "application/json", **(headers or {})} if content is not None else headers
        try:
            response = await self._http.request(method, path, params=params, content=content, headers=sent)
        except httpx.TransportError as exc:
            raise NetworkError(f"{method} {self.base_url}{path}: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            if "retry_after" not in problem and response.headers.get("retry-after", "").isdigit():
                problem["retry_after"] = int(response.headers["retry-after"])
            raise http_error(response.status_code, problem, method, str(response.url))
        return response.json() if response.content else None
