"""A team's FastAPI app with two svc gateways mounted side by side (tests.apps.team under /team,
tests.apps.other under /other), its lifespan composed of both, and endpoints of its own that submit
and watch through the team's gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from celery import chain, chord, group
from fastapi import FastAPI

import svc
from tests.apps import other, team

team_gateway = svc.Gateway(team.celery_app)
other_gateway = svc.Gateway(other.celery_app)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with team_gateway.lifespan(app), other_gateway.lifespan(app):
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/team", team_gateway.asgi)
app.mount("/other", other_gateway.asgi)


@app.post("/add")
async def add(x: int, y: int) -> dict[str, Any]:
    """A task that is not exposed, submitted by the team's own code; answered before it runs."""
    task = await team_gateway.submit(team.add_numbers.s(x, y))
    return task.model_dump()


@app.post("/add-and-wait")
async def add_and_wait(x: int, y: int) -> dict[str, Any]:
    """Submit, then follow the task's events to its end with gateway.watch."""
    task = await team_gateway.submit(team.add_numbers.s(x, y))
    states, result = [], None
    async for event in team_gateway.watch(task.model_dump()["task_id"]):
        states.append(event["state"])
        result = event.get("result")
    return {"states": states, "result": result}


@app.post("/chain")
async def add_chain() -> dict[str, Any]:
    """A chain of the team's tasks, submitted server-side: (1 + 2) + 3."""
    task = await team_gateway.submit(chain(team.add_numbers.s(1, 2), team.add_numbers.s(3)))
    return task.model_dump()


@app.post("/group")
async def add_group() -> dict[str, Any]:
    """A group of the team's tasks: [1 + 1, 2 + 2]."""
    task = await team_gateway.submit(group(team.add_numbers.s(1, 1), team.add_numbers.s(2, 2)))
    return task.model_dump()


@app.post("/chord")
async def add_chord() -> dict[str, Any]:
    """A chord: total([1 + 1, 2 + 2])."""
    task = await team_gateway.submit(
        chord([team.add_numbers.s(1, 1), team.add_numbers.s(2, 2)], team.total.s())
    )
    return task.model_dump()


@app.post("/add-with-id")
async def add_with_id(task_id: str) -> dict[str, Any]:
    """A signature with a Celery option of its own (a chosen id): sent by Celery, PENDING first."""
    task = await team_gateway.submit(team.add_numbers.s(4, 5).set(task_id=task_id))
    return task.model_dump()
