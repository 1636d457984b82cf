"""The tasks svc ships, and the registry of those exposed over HTTP with their argument schemas."""

from svc.tasks import diagnostic, seed
from svc.tasks.registry import EXPOSED, ExposedTask, exposed_task

__all__ = ["EXPOSED", "ExposedTask", "diagnostic", "exposed_task", "seed"]
