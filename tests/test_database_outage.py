"""A database connection dropped under a running server is a retryable 503, and a retried
submit with the same key is stored exactly once (PostgreSQL: connections really terminated)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
from django.db import connection
from django.db.models import Count
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


def _terminate_backends_except(keep: set[int]) -> int:
    """Every other connection to the test database dies at once, as in a server restart."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname=db["NAME"], autocommit=True,
    ) as killer:  # fmt: skip
        rows = killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> ALL(%s)",
            [list(keep)],
        ).fetchall()
    return len(rows)


def _judge_until_done(base: str, project_id: int, token: str, outcomes: dict) -> None:
    """One annotator: lease, submit with a fresh key, retry the same request on a 503 (as the
    UI does) until the queue is empty. Records every status seen and each acknowledged key."""
    while True:
        status, lease, _ = _post(f"{base}/api/projects/{project_id}/comparisons/next/", token)
        outcomes["statuses"].append(status)
        if status == 503:
            continue
        if status == 204:
            return
        assert status == 200, lease
        body = {"choice": "left", "submission_key": str(uuid.uuid4())}
        url = f"{base}/api/assignments/{lease['assignment_id']}/submit/"
        while (status := _post(url, token, body)[0]) == 503:
            outcomes["statuses"].append(status)
        outcomes["statuses"].append(status)
        assert status in (200, 201), status
        outcomes["acknowledged"].append(body["submission_key"])


@pytest.mark.django_db(transaction=True)
def test_connections_dropped_under_concurrent_submits_lose_and_double_nothing(project, live_server):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server connection to terminate (CI's second pass runs this)")
    from tests.annotate.test_judging import annotators

    round_ = make_round(project, prompts=60, required=2)
    tokens = [Token.objects.create(user=user).key for user in annotators(project, 6)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own_pid,) = cursor.fetchone()
    outcomes: dict[str, list] = {"statuses": [], "acknowledged": []}
    judges = [
        threading.Thread(target=_judge_until_done, args=(live_server.url, project.pk, t, outcomes))
        for t in tokens
    ]
    for judge in judges:
        judge.start()
    terminated = 0
    while any(judge.is_alive() for judge in judges):
        terminated += _terminate_backends_except({own_pid})
        time.sleep(0.15)
    for judge in judges:
        judge.join()

    assert terminated > 0 and 503 in outcomes["statuses"]  # the faults really hit requests
    assert 500 not in outcomes["statuses"]
    stored = list(Judgment.objects.values_list("submission_key", flat=True))
    assert sorted(map(str, stored)) == sorted(outcomes["acknowledged"])  # each exactly once
    assert len(stored) == 60 * 2  # every pair judged to its overlap, none beyond
    per_pair = Judgment.objects.values("comparison").annotate(n=Count("id"))
    assert {row["n"] for row in per_pair} == {2}
    assert round_.comparisons.filter(status="complete").count() == 60
