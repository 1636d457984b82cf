"""svc: submit Celery tasks from FastAPI without blocking and watch every task live over WebSockets."""

__version__ = "0.1.0"
