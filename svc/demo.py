"""svc's demo app, served: its gateway, and the ASGI apps ``uvicorn`` can serve.

``uvicorn svc.demo:asgi`` is what ``svc api`` serves without ``-A`` (the fast lanes in front of the
FastAPI app); ``uvicorn svc.demo:app`` is the FastAPI app alone. Importing this module makes the demo's
Celery app and gateway (no I/O until the lifespan starts); nothing else in svc imports it but the
``svc`` command.
"""

from __future__ import annotations

from svc.celery_app import app as celery_app
from svc.gateway import Gateway
from svc.settings import get_settings

gateway = Gateway(celery_app, settings=get_settings())
app = gateway.fastapi
asgi = gateway.asgi
