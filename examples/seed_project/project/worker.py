import os

from celery import Celery

import svc

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

celery_app = Celery("worker", broker=REDIS_URL, backend=REDIS_URL, include=["project.tasks"])
svc.instrument(celery_app)
