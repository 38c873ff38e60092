"""The Celery app. Its configuration lives in Django settings under the CELERY_ prefix."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tandem")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Light work goes to `default`; generation and training go to `gpu`, served by its own workers.
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.autodiscover_tasks()
