"""The tasks svc ships, and the registry of those exposed over HTTP with their argument schemas."""

from svc.exposure import EXPOSED, ExposedTask, exposed_task
from svc.tasks import diagnostic, seed

__all__ = ["EXPOSED", "ExposedTask", "diagnostic", "exposed_task", "seed"]
