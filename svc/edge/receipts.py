"""What a submit answers (SPEC "POST /tasks/{name}", "POST /workflows"): where to watch the task, and
its token. One builder serves the HTTP routes and ``gateway.submit``; every URL carries the prefix the
API is served under (its ASGI ``root_path``: a mount, or a proxy's ``--root-path``)."""

from __future__ import annotations

from pydantic import BaseModel

from svc.edge import auth
from svc.settings import Settings


class Accepted(BaseModel):
    """Response of a submit (SPEC "POST /tasks/{name}")."""

    task_id: str
    name: str
    state: str
    status_url: str
    ws_url: str
    token: str
    retry_of: str | None = None


class WorkflowAccepted(BaseModel):
    """Response of ``POST /workflows``: the workflow's own id, stream and token, and its steps' ids."""

    workflow_id: str
    kind: str
    task_ids: list[str]
    status_url: str
    ws_url: str
    token: str

    @property
    def task_id(self) -> str:
        """The workflow's id under the name a task's answer uses: its stream is watched the same way."""
        return self.workflow_id


def accepted(settings: Settings, prefix: str, task_id: str, name: str, **extra: str) -> dict[str, str]:
    """The fields of ``Accepted`` for a task submitted under ``prefix`` (a plain dict: this is on the
    submit's hot path, serialised once by orjson)."""
    return {
        "task_id": task_id,
        "name": name,
        "state": "PENDING",
        "status_url": f"{prefix}/tasks/{task_id}",
        "ws_url": f"{prefix}/ws/tasks/{task_id}",
        "token": auth.issue_token(settings, task_id),
        **extra,
    }


def workflow_accepted(
    settings: Settings, prefix: str, workflow_id: str, kind: str, task_ids: list[str]
) -> WorkflowAccepted:
    """The answer of a workflow submitted under ``prefix``."""
    return WorkflowAccepted(
        workflow_id=workflow_id,
        kind=kind,
        task_ids=task_ids,
        status_url=f"{prefix}/tasks/{workflow_id}",
        ws_url=f"{prefix}/ws/tasks/{workflow_id}",
        token=auth.issue_token(settings, workflow_id),
    )
