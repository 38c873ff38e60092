"""Tandem's Django project. Importing it loads the Celery app so tasks can be enqueued."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
