from fastapi import FastAPI

import svc
from project.tasks import send_email_task
from project.worker import celery_app

gateway = svc.Gateway(celery_app)
app = FastAPI(lifespan=gateway.lifespan)
app.mount("/svc", gateway.asgi)


@app.post("/send-email")
async def send_email(email: str):
    task = await gateway.submit(send_email_task.s(email, "Welcome!"))  # in place of .delay()
    return {"task_id": task.task_id, "ws_url": task.ws_url, "token": task.token}
