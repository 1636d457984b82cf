import os
import time

import svc
from project.worker import celery_app

EMAIL_DELAY = float(os.environ.get("EMAIL_DELAY", "5"))  # seconds a (pretend) mail server takes


@svc.expose
@celery_app.task(name="send_email_task")
def send_email_task(email: str, subject: str) -> str:
    time.sleep(EMAIL_DELAY)
    return f"Email sent to {email} with subject {subject}"
