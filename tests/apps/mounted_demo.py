"""svc's demo gateway mounted at /svc in a FastAPI app of the team's, as a team mounts its own: the
pages, the SDK and the sockets have to work under the prefix."""

from __future__ import annotations

from fastapi import FastAPI

from svc.demo import gateway

app = FastAPI(lifespan=gateway.lifespan)
app.mount("/svc", gateway.asgi)
