"""A database connection dropped under a running server is a retryable 503, and a retried
submit with the same key is stored exactly once (PostgreSQL: connections really terminated)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from annotate import services
from annotate.models import Judgment
from tests.annotate.test_judging import make_round


def _terminate_own_connection() -> None:
    """pg_terminate_backend on the calling thread's connection, from a second connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname=db["NAME"], autocommit=True,
    ) as killer:  # fmt: skip
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])


def _post(url: str, token: str, body: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


@pytest.mark.django_db(transaction=True)
def test_a_terminated_connection_is_a_503_and_the_retry_stores_the_judgment_once(
    project, annotator, live_server, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server connection to terminate (CI's second pass runs this)")
    make_round(project, prompts=1)
    token = Token.objects.create(user=annotator).key
    status, lease, _ = _post(
        f"{live_server.url}/api/projects/{project.pk}/comparisons/next/", token
    )
    assert status == 200
    url = f"{live_server.url}/api/assignments/{lease['assignment_id']}/submit/"
    body = {"choice": "left", "submission_key": str(uuid.uuid4())}

    # The server's connection dies in the middle of the first submit (a failover, a restart).
    real_submit = services.feedback_submit
    dropped: list[bool] = []

    def submit_on_a_dropped_connection(**kwargs):
        if not dropped:
            dropped.append(True)
            _terminate_own_connection()
        return real_submit(**kwargs)

    monkeypatch.setattr(services, "feedback_submit", submit_on_a_dropped_connection)
    status, failed, headers = _post(url, token, body)
    assert status == 503 and failed["error"] == "unavailable" and headers["Retry-After"] == "1"
    assert not Judgment.objects.exists()

    status, stored, _ = _post(url, token, body)
    assert status == 201, stored
    status, _, _ = _post(url, token, body)
    assert status == 200  # the same key again: answered with what was stored
    assert Judgment.objects.count() == 1
