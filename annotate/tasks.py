"""Celery tasks for feedback collection: thin, they take ids and call one service."""

from celery import shared_task

from annotate.services import leases_expire


@shared_task(
    name="annotate.tasks.reclaim_expired_leases", acks_late=True, soft_time_limit=50, time_limit=60
)
def reclaim_expired_leases() -> int:
    return leases_expire()
