"""Prompt intake: all-or-nothing, idempotent on external id, clear per-row errors."""

from __future__ import annotations

import pytest

from annotate.models import Prompt

pytestmark = pytest.mark.django_db


def _url(project) -> str:
    return f"/api/projects/{project.pk}/prompts/"


def test_batch_is_stored_and_a_repeat_changes_nothing(project, token_api):
    rows = [{"external_id": f"q-{i}", "text": f"Question {i}?"} for i in range(100)]
    first = token_api.post(_url(project), {"prompts": rows}, format="json")
    assert first.status_code == 201, first.content
    assert (first.json()["created"], first.json()["unchanged"]) == (100, 0)
    second = token_api.post(_url(project), {"prompts": rows}, format="json")
    assert second.status_code == 200
    assert (second.json()["created"], second.json()["unchanged"]) == (0, 100)
    assert second.json()["prompt_ids"] == first.json()["prompt_ids"]
    assert Prompt.objects.filter(project=project).count() == 100


def test_chat_prompts_are_accepted(project, admin_api):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    response = admin_api.post(_url(project), {"prompts": [{"messages": messages}]}, format="json")
    assert response.status_code == 201, response.content
    assert Prompt.objects.get(project=project).messages == messages


def test_prompt_over_the_size_limit_rejects_the_batch_and_stores_nothing(project, token_api):
    project.max_prompt_chars = 50
    project.save()
    rows = [{"text": "short"}, {"text": "x" * 51}, {"text": "also short"}]
    response = token_api.post(_url(project), {"prompts": rows}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert body["rows"] == [
        {"index": 1, "error": "text is 51 characters; this project's limit is 50"}
    ]
    assert not Prompt.objects.filter(project=project).exists()


def test_external_id_reused_for_different_text_is_a_clear_error(project, token_api):
    token_api.post(_url(project), {"prompts": [{"external_id": "a", "text": "One"}]}, format="json")
    response = token_api.post(
        _url(project),
        {"prompts": [{"external_id": "b", "text": "Two"}, {"external_id": "a", "text": "Other"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "already used by prompt" in response.json()["rows"][0]["error"]
    assert response.json()["rows"][0]["index"] == 1
    assert list(Prompt.objects.values_list("external_id", flat=True)) == ["a"]


def test_external_id_repeated_inside_one_batch_is_an_error(project, token_api):
    rows = [{"external_id": "a", "text": "One"}, {"external_id": "a", "text": "One"}]
    response = token_api.post(_url(project), {"prompts": rows}, format="json")
    assert response.status_code == 400
    assert response.json()["rows"] == [{"index": 1, "error": "external_id 'a' repeats"}]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({}, "give exactly one of text and messages"),
        ({"text": "   "}, "text must be non-empty"),
        ({"text": "a", "colour": "red"}, "unknown field(s): colour"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "message role must be one of"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "the last message must be"),
        ("just a string", "each prompt must be an object"),
    ],
)
def test_malformed_rows_name_the_problem(project, admin_api, row, message):
    response = admin_api.post(_url(project), {"prompts": [row]}, format="json")
    assert response.status_code == 400
    assert message in response.json()["rows"][0]["error"]
    assert not Prompt.objects.exists()


def test_missing_prompts_field_is_a_400(project, admin_api):
    response = admin_api.post(_url(project), {"rows": []}, format="json")
    assert response.status_code == 400
    assert "prompts" in response.json()["detail"]


def test_too_many_prompts_in_one_request(project, admin_api, settings):
    settings.MAX_PROMPTS_PER_REQUEST = 3
    rows = [{"text": f"q{i}"} for i in range(4)]
    response = admin_api.post(_url(project), {"prompts": rows}, format="json")
    assert response.status_code == 400
    assert "the limit is 3" in response.json()["detail"]


def test_annotators_cannot_add_prompts(project, annotator_api):
    response = annotator_api.post(_url(project), {"prompts": [{"text": "x"}]}, format="json")
    assert response.status_code == 403
    assert not Prompt.objects.exists()


def test_partial_mode_stores_good_rows_and_reports_bad_ones(project, token_api):
    rows = [{"text": "good one"}, {"text": ""}, {"text": "good two"}]
    response = token_api.post(
        _url(project), {"prompts": rows, "all_or_nothing": False}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["created"] == 2
    assert response.json()["errors"] == [{"index": 1, "error": "text must be non-empty"}]
    assert Prompt.objects.filter(project=project).count() == 2


def test_upload_jsonl_and_csv(project, token_api):
    import io

    jsonl = io.BytesIO(b'{"external_id": "j1", "text": "From JSONL"}\n\n{"text": "Second"}\n')
    jsonl.name = "prompts.jsonl"
    response = token_api.post(f"{_url(project)}upload/", {"file": jsonl}, format="multipart")
    assert response.status_code == 201 and response.json()["created"] == 2

    csv_file = io.BytesIO(
        b'external_id,text,topic\nc1,"Hello, world?",greeting\nc2,"Line one\nline two",\n'
    )
    csv_file.name = "prompts.csv"
    response = token_api.post(f"{_url(project)}upload/", {"file": csv_file}, format="multipart")
    assert response.status_code == 201, response.content
    stored = Prompt.objects.get(external_id="c1")
    assert (stored.text, stored.metadata, stored.source) == (
        "Hello, world?",
        {"topic": "greeting"},
        "upload",
    )
    assert Prompt.objects.get(external_id="c2").text == "Line one\nline two"


def test_upload_errors_name_the_line(project, token_api):
    import io

    broken = io.BytesIO(b'{"text": "ok"}\n{"text": \n')
    broken.name = "prompts.jsonl"
    response = token_api.post(f"{_url(project)}upload/", {"file": broken}, format="multipart")
    assert response.status_code == 400
    assert "Line 2 is not valid JSON" in response.json()["detail"]
    latin = io.BytesIO('{"text": "caf\xe9"}\n'.encode("latin-1"))
    latin.name = "prompts.jsonl"
    response = token_api.post(f"{_url(project)}upload/", {"file": latin}, format="multipart")
    assert response.status_code == 400 and "not UTF-8 (line 1)" in response.json()["detail"]
    no_text = io.BytesIO(b"prompt\nhello\n")
    no_text.name = "prompts.csv"
    response = token_api.post(f"{_url(project)}upload/", {"file": no_text}, format="multipart")
    assert "'text' column" in response.json()["detail"]
    assert not Prompt.objects.exists()
