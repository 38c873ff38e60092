"""The whole annotation workflow through the REST API alone, as a program and three people."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def alpaca_file(rows: int) -> io.BytesIO:
    lines = [
        {
            "instruction": f"Task {i}?",
            "output_1": f"Good answer {i}.",
            "output_2": f"Meh {i}.",
            "preference": 1 if i % 3 else 2,
        }
        for i in range(rows)
    ]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    data.name = "alpaca.jsonl"
    return data


def test_project_to_trl_export_through_the_api(admin_user):
    admin = client_for(admin_user)
    people = [UserFactory(username=name) for name in ("ann", "ben", "cat")]
    UserFactory(username="pipeline")

    project = admin.post(
        "/api/projects/", {"name": "P", "slug": "p", "required_annotations": 2}, format="json"
    ).json()
    base = f"/api/projects/{project['id']}"
    for username in ("ann", "ben", "cat"):
        assert (
            admin.post(f"{base}/members/", {"username": username}, format="json").status_code == 201
        )
    admin.post(f"{base}/members/", {"username": "pipeline", "role": "client"}, format="json")
    program = client_for(UserFactory(username="pipeline"))

    prompts = [{"external_id": f"q{i}", "text": f"Question {i}?"} for i in range(100)]
    first = program.post(f"{base}/prompts/", {"prompts": prompts}, format="json")
    second = program.post(f"{base}/prompts/", {"prompts": prompts}, format="json")
    assert (first.json()["created"], second.json()["created"], second.json()["unchanged"]) == (
        100,
        0,
        100,
    )

    imported = program.post(
        f"{base}/import/", {"file": alpaca_file(12), "format": "alpaca_eval"}, format="multipart"
    )
    assert imported.status_code == 201, imported.content
    assert imported.json()["judgments_created"] == 12

    prompt_ids = first.json()["prompt_ids"][:20]
    for index, prompt_id in enumerate(prompt_ids):
        body = {
            "prompt_id": prompt_id,
            "answer_a": f"Careful answer {index}.",
            "answer_b": f"Sloppy answer {index}.",
        }
        assert program.post(f"{base}/comparisons/", body, format="json").status_code == 201

    # Three annotators take turns, overlap 2: ann and ben prefer the careful answer, cat the
    # sloppy one.
    apis = {person.username: client_for(person) for person in people}
    judged_by: dict[int, set[str]] = {}
    while True:
        progressed = False
        for username, api in apis.items():
            lease = api.post(f"{base}/comparisons/next/")
            if lease.status_code != 200:
                continue
            pair = lease.json()
            careful_on_left = pair["left"]["text"].startswith("Careful")
            choice = "left" if careful_on_left == (username != "cat") else "right"
            submitted = api.post(
                f"/api/assignments/{pair['assignment_id']}/submit/",
                {"choice": choice},
                format="json",
            )
            assert submitted.status_code == 201
            judged_by.setdefault(submitted.json()["comparison"], set()).add(username)
            progressed = True
        if not progressed:
            break
    assert sum(len(names) for names in judged_by.values()) == 40
    assert all(len(names) == 2 for names in judged_by.values())

    stats = program.get(f"{base}/statistics/").json()
    assert stats["judgments"] == 40 + 12
    assert 0 <= stats["percent_agreement"] < 1

    export = program.get(f"{base}/export/trl/")
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    ours = [row for row in rows if row["chosen"][0]["content"].startswith(("Careful", "Sloppy"))]
    # ann + ben agree on the careful answer; a pair with cat is a 1-1 disagreement and stays out
    # of the training data.
    agreeing = [cid for cid, names in judged_by.items() if names == {"ann", "ben"}]
    assert sorted(row["comparison_id"] for row in ours) == sorted(agreeing)
    assert all(row["chosen"][0]["content"].startswith("Careful") for row in ours)
    assert all(row["agreement"] == 1.0 for row in ours)
    imported_rows = [row for row in rows if row["prompt"][0]["content"].startswith("Task")]
    assert len(imported_rows) == 12
