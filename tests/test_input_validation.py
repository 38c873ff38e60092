"""Strange input is a clean 4xx in the API's error shape, never a 500 (config.validation)."""

from __future__ import annotations

import io
import json

import pytest

from annotate.models import Judgment, Project, Prompt
from config.pagination import MAX_PAGE_SIZE, BoundedLimitOffsetPagination
from config.safe_json import json_depth_exceeds, json_loads_checked
from tests.annotate.test_judging import make_round

pytestmark = pytest.mark.django_db

HUGE_IDS = [2**63, 2**63 + 1, 10**30]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    return body


def _raw_post(client, url: str, body: str):
    return client.post(url, data=body, content_type="application/json")


# --- JSON depth, NaN, lone surrogates --------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/projects/", "/api/web/login/"])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(admin_api, url):
    body = _error(_raw_post(admin_api, url, "[" * 50_000), 400)
    assert "nested deeper" in str(body["detail"])


def test_a_submit_with_deeply_nested_json_is_a_400(project, annotator, annotator_api):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    nested = '{"choice": ' + "[" * 10_000 + "]" * 10_000 + "}"
    _error(
        _raw_post(annotator_api, f"/api/assignments/{lease['assignment_id']}/submit/", nested), 400
    )
    assert not Judgment.objects.exists()


def test_a_lone_surrogate_in_a_prompt_is_a_400_and_nothing_is_stored(project, token_api):
    body = '{"prompts": [{"text": "fine"}, {"text": "broken \\ud800 text"}]}'
    detail = _error(_raw_post(token_api, f"/api/projects/{project.pk}/prompts/", body), 400)
    assert "surrogate" in str(detail["detail"])
    assert not Prompt.objects.filter(project=project).exists()


def test_nan_is_not_json(admin_api):
    _error(
        _raw_post(admin_api, "/api/projects/", '{"name": "x", "slug": "x", "gold_rate": NaN}'), 400
    )


def test_a_lone_surrogate_in_an_import_row_skips_that_row_only(project, token_api):
    good = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
    lines = [json.dumps(good), '{"prompt": "\\udc00", "chosen": "a", "rejected": "b"}']
    upload = io.BytesIO("\n".join(lines).encode())
    upload.name = "pairs.jsonl"
    response = token_api.post(
        f"/api/projects/{project.pk}/import/",
        {"file": upload, "format": "trl", "all_or_nothing": "false"},
        format="multipart",
    )
    assert response.status_code == 201, response.content[:300]
    assert response.json()["rows_failed"] == 1
    assert "surrogate" in json.dumps(response.json())


def test_the_depth_check_counts_only_brackets_outside_strings():
    assert not json_depth_exceeds('{"a": "' + "[" * 500 + '"}')
    assert not json_depth_exceeds("[" * 64 + "]" * 64)
    assert json_depth_exceeds("[" * 65 + "]" * 65)
    assert json_loads_checked('["\\\\", "\\"[[", {"b": "]"}]') == ["\\", '"[[', {"b": "]"}]
    assert json_loads_checked('"\\ud83d\\ude00"') == "\U0001f600"  # a surrogate pair is text


# --- ids and integers ------------------------------------------------------------------------


@pytest.mark.parametrize("huge", HUGE_IDS)
def test_ids_beyond_64_bits_in_a_path_are_404s(project, annotator_api, admin_api, huge):
    assert annotator_api.post(f"/api/projects/{huge}/comparisons/next/").status_code == 404
    submit = annotator_api.post(
        f"/api/assignments/{huge}/submit/", {"choice": "left"}, format="json"
    )
    assert submit.status_code == 404
    pause = admin_api.post(f"/api/projects/{project.pk}/annotators/{huge}/pause/", {"paused": True})
    assert pause.status_code == 404
    removal = admin_api.delete(f"/api/web/projects/{project.pk}/members/{huge}/")
    assert removal.status_code == 404


def test_an_integer_beyond_its_column_is_a_400_naming_the_field(admin_api):
    body = _error(
        admin_api.post("/api/projects/", {"name": "x", "slug": "x", "round_quota": 2**70}),
        400,
    )
    assert "round_quota" in json.dumps(body)
    assert not Project.objects.filter(slug="x").exists()


def test_a_run_for_a_round_number_beyond_64_bits_is_a_400(project, admin_api):
    response = admin_api.post(
        f"/api/projects/{project.pk}/runs/", {"kind": "generate", "round": 2**64}, format="json"
    )
    _error(response, 400)


# --- query strings ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "-1", "1.5", "1e3", str(10**24)])
def test_query_numbers_are_ascii_whole_numbers_in_range(project, token_api, value):
    stats = token_api.get(f"/api/projects/{project.pk}/statistics/", {"round": value})
    assert "round" in _error(stats, 400)["detail"]
    listing = token_api.get(f"/api/projects/{project.pk}/prompts/", {"limit": value})
    _error(listing, 400)


def test_after_step_takes_ascii_digits_only(project, admin_api):
    from training.models import TrainingRun

    run = TrainingRun.objects.create(project=project, kind="reward")
    assert (
        admin_api.get(f"/api/runs/{run.pk}/metrics/", {"after_step": "\u00b2"}).status_code == 400
    )
    assert admin_api.get(f"/api/runs/{run.pk}/metrics/", {"after_step": "3"}).status_code == 200


def test_a_page_never_holds_more_than_the_maximum(rf):
    from rest_framework.request import Request

    request = Request(rf.get("/", {"limit": "1000000000"}))
    assert BoundedLimitOffsetPagination().get_limit(request) == MAX_PAGE_SIZE


# --- sizes and files -------------------------------------------------------------------------


def test_a_json_body_over_the_request_limit_is_a_413_in_the_error_shape(
    project, token_api, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    rows = [{"text": "x" * 500} for _ in range(40)]
    response = token_api.post(
        f"/api/projects/{project.pk}/prompts/", {"prompts": rows}, format="json"
    )
    assert _error(response, 413)["error"] == "too_large"


def test_a_prompt_upload_declared_over_the_limit_is_refused_before_reading(
    project, token_api, settings
):
    settings.MAX_IMPORT_BYTES = 2_000
    upload = io.BytesIO(b'{"text": "x"}\n' * 10_000)
    upload.name = "prompts.jsonl"
    response = token_api.post(
        f"/api/projects/{project.pk}/prompts/upload/", {"file": upload}, format="multipart"
    )
    assert _error(response, 413)["error"] == "too_large"


def test_a_csv_field_over_the_csv_limit_is_a_400_naming_the_line(project, token_api):
    upload = io.BytesIO(b"text\n" + b'"' + b"x" * 200_000 + b'"\n')
    upload.name = "prompts.csv"
    response = token_api.post(
        f"/api/projects/{project.pk}/prompts/upload/", {"file": upload}, format="multipart"
    )
    assert "CSV line" in _error(response, 400)["detail"]
