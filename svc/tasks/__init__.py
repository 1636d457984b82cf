"""The tasks of svc's demo app (svc/celery_app.py): the seed's, and small ones for tests and first steps.

They are exposed on the demo app only, and declared ``shared=False``: Celery would otherwise add every
``@app.task`` to each app finalized in the same process, and a team's own ``send_email_task`` would run
svc's demo one.
"""

from svc.tasks import diagnostic, seed

__all__ = ["diagnostic", "seed"]
