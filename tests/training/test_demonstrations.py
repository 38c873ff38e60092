"""Demonstrations through the platform: a round asks for written answers on part of its prompts,
annotators write or rewrite them through the judging API, a second annotator reviews where the
project asks, they export and import in TRL's SFT format, and the chain fine-tunes on them
before the reward model, the policy step starting from the SFT adapter."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from rest_framework.test import APIClient

from annotate.importers import demonstrations_import
from annotate.models import (
    Comparison,
    Demonstration,
    FeedbackKind,
    MemberRole,
    ReviewStatus,
    Round,
)
from annotate.services import assignment_lease_next, membership_set, round_open
from registry.models import ModelKind, ModelVersion
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory, UserFactory
from tests.training.helpers import TINY_TRAINING, judged_pairs
from training import pipeline, runner
from training.loop import drive_runs
from training.models import RunKind, RunStatus, TrainingRun
from training.pairing import demonstration_prompts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def demonstration_item(project, *, round_=None) -> Comparison:
    round_ = round_ or Round.objects.filter(project=project).first() or round_open(project=project)
    prompt = PromptFactory(project=project, text="Explain recursion in one sentence.")
    return ComparisonFactory(
        prompt=prompt,
        round=round_,
        kind=FeedbackKind.DEMONSTRATION,
        response_a=ResponseFactory(prompt=prompt, text="It is when a thing calls itself."),
        response_b=ResponseFactory(prompt=prompt, text="Recursion: see recursion."),
    )


def writer(project):
    user = UserFactory()
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    return user


def submit(client, assignment_id: int, **body):
    return client.post(
        f"/api/assignments/{assignment_id}/submit/",
        {"kind": "demonstration", **body},
        format="json",
    )


def test_a_demonstration_is_written_from_the_side_shown_and_stored_once(project):
    item = demonstration_item(project)
    alice = writer(project)
    client = client_for(alice)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert leased["kind"] == "demonstration"
    right_text = leased["right"]["text"]
    key = str(uuid.uuid4())

    empty = submit(client, leased["assignment_id"], text="   ", submission_key=key)
    assert empty.status_code == 400 and "error" in empty.json()
    assert not Demonstration.objects.exists()

    text = right_text + " A function that calls itself on a smaller input."
    stored = submit(
        client, leased["assignment_id"], text=text, edited_from="right", submission_key=key
    )
    assert stored.status_code == 201, stored.json()
    demonstration = Demonstration.objects.get()
    assert demonstration.text == text and demonstration.annotator == alice
    assert demonstration.edited_from.text == right_text  # the answer that was on the right
    assert demonstration.review_status == ReviewStatus.ACCEPTED
    item.refresh_from_db()
    assert item.status == "complete" and item.judgment_count == 1

    again = submit(client, leased["assignment_id"], text=text, submission_key=key)
    assert again.status_code == 200 and again.json()["id"] == demonstration.pk
    other = submit(client, leased["assignment_id"], text="Something else.")
    assert other.status_code == 409
    assert "You already judged this pair: another answer" in other.json()["detail"]
    assert Demonstration.objects.count() == 1


def test_a_pairwise_body_on_a_demonstration_item_is_refused(project):
    demonstration_item(project)
    client = client_for(writer(project))
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    response = client.post(
        f"/api/assignments/{leased['assignment_id']}/submit/", {"choice": "left"}, format="json"
    )
    assert response.status_code == 400
    assert "demonstration" in response.json()["detail"]


def test_under_review_a_second_annotator_decides_and_nobody_reviews_their_own(project):
    project.review_demonstrations = True
    project.save()
    demonstration_item(project)
    author, reviewer = writer(project), writer(project)
    lease = assignment_lease_next(project=project, annotator=author)
    assert (
        submit(client_for(author), lease.pk, text="A function calling itself.").status_code == 201
    )
    demonstration = Demonstration.objects.get()
    assert demonstration.review_status == ReviewStatus.PENDING
    assert not pipeline.new_demonstrations_exist(project)  # a pending answer does not train

    url = f"/api/projects/{project.pk}/demonstrations/{demonstration.pk}/review/"
    own = client_for(author).post(url, {"accepted": True}, format="json")
    assert own.status_code == 403
    pending = client_for(reviewer).get(
        f"/api/projects/{project.pk}/demonstrations/?review_status=pending"
    )
    assert [row["id"] for row in pending.json()["results"]] == [demonstration.pk]
    accepted = client_for(reviewer).post(url, {"accepted": True}, format="json")
    assert accepted.status_code == 200 and accepted.json()["review_status"] == "accepted"
    assert client_for(reviewer).post(url, {"accepted": False}, format="json").status_code == 409
    assert pipeline.new_demonstrations_exist(project)
    outsider = client_for(UserFactory()).post(url, {"accepted": True}, format="json")
    assert outsider.status_code in (403, 404)


def test_demonstrations_export_as_trl_messages_and_import_back(project, admin_api, other_project):
    demonstration_item(project)
    author = writer(project)
    lease = assignment_lease_next(project=project, annotator=author)
    submit(client_for(author), lease.pk, text="It calls itself.", edited_from=None)
    body = admin_api.get(f"/api/projects/{project.pk}/export/sft/").getvalue().decode()
    (row,) = [json.loads(line) for line in body.splitlines()]
    assert row["messages"] == [
        {"role": "user", "content": "Explain recursion in one sentence."},
        {"role": "assistant", "content": "It calls itself."},
    ]

    published = "\n".join(
        [
            body.strip(),
            json.dumps({"prompt": "Say hi.", "completion": ""}),  # empty: stored, warned
            json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),  # skipped
        ]
    ).encode()
    result = demonstrations_import(project=other_project, file=io.BytesIO(published))
    assert (result.demonstrations_created, result.rows_failed, result.empty_answers) == (2, 1, 1)
    assert result.errors[0]["row"] == 3
    again = demonstrations_import(project=other_project, file=io.BytesIO(published))
    assert again.demonstrations_created == 0 and again.skipped_duplicates == 2
    stored = Demonstration.objects.filter(project=other_project).order_by("id")
    assert [d.text for d in stored] == ["It calls itself.", ""]
    assert all(d.review_status == ReviewStatus.ACCEPTED for d in stored)


def test_a_share_of_the_training_prompts_asks_for_demonstrations_never_a_held_out_one():
    heldout = set(range(0, 200, 3))
    chosen = demonstration_prompts(
        list(range(200)), round_number=2, share=0.5, is_heldout=heldout.__contains__
    )
    assert not chosen & heldout
    assert 0.35 < len(chosen) / (200 - len(heldout)) < 0.65
    assert chosen == demonstration_prompts(
        list(range(200)), round_number=2, share=0.5, is_heldout=heldout.__contains__
    )
    assert (
        demonstration_prompts([1, 2], round_number=1, share=0.0, is_heldout=heldout.__contains__)
        == set()
    )


def test_a_round_generates_demonstration_items_on_its_share_of_prompts(tiny_project):
    tiny_project.demonstration_share = 1.0
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    tiny_project.save()
    prompts = [PromptFactory(project=tiny_project, text=f"Topic {i}.") for i in range(8)]
    round_, run = pipeline.round_start(project=tiny_project)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    kinds = dict(round_.comparisons.values_list("prompt_id", "kind"))
    for prompt in prompts:
        heldout = pipeline.prompt_is_heldout(prompt.pk, 0.5)
        assert kinds[prompt.pk] == (
            FeedbackKind.PAIRWISE if heldout else FeedbackKind.DEMONSTRATION
        )


def test_the_chain_fine_tunes_first_and_the_policy_step_starts_from_the_sft_adapter(tiny_project):
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "sft": TINY_TRAINING,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 2},
        "policy_data": "all",  # the judged pairs below belong to no round
    }
    tiny_project.gate_min_win_rate = 0.0
    tiny_project.gate_max_kl = 1e6
    tiny_project.gate_min_heldout_accuracy = 0.0
    tiny_project.save()
    judged_pairs(tiny_project, 6)
    round_ = round_open(project=tiny_project)
    for _ in range(3):
        item = demonstration_item(tiny_project, round_=round_)
        author = writer(tiny_project)
        lease = assignment_lease_next(project=tiny_project, annotator=author)
        assert lease.comparison_id == item.pk
        submit(client_for(author), lease.pk, text="A function that calls itself.")

    first = pipeline.round_finish(round=round_)
    assert first.kind == RunKind.SFT
    drive_runs(round_, log=lambda message: None)
    chain = TrainingRun.objects.filter(round=round_, chained=True).order_by("id")
    assert list(chain.values_list("kind", "status")) == [
        (RunKind.SFT, RunStatus.SUCCEEDED),
        (RunKind.REWARD, RunStatus.SUCCEEDED),
        (RunKind.DPO, RunStatus.SUCCEEDED),
        (RunKind.EVALUATE, RunStatus.SUCCEEDED),
    ]
    sft = chain.get(kind=RunKind.SFT).output_version
    dpo = chain.get(kind=RunKind.DPO).output_version
    assert sft.kind == ModelKind.POLICY
    assert sorted(sft.training_data["demonstrations"]) == sorted(
        Demonstration.objects.filter(project=tiny_project).values_list("id", flat=True)
    )
    assert dpo.config["init_adapter"] == sft.artifact_path
    assert dpo.parent == ModelVersion.objects.get(project=tiny_project, kind="policy", number=0)
    # Trained on, the same demonstrations do not start another SFT step.
    assert not pipeline.new_demonstrations_exist(tiny_project)


def test_a_round_of_demonstrations_only_evaluates_its_sft_version(tiny_project):
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "sft": TINY_TRAINING,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 2},
    }
    tiny_project.save()
    for index in range(4):
        PromptFactory(project=tiny_project, text=f"Held-out candidate {index}.")
    round_ = round_open(project=tiny_project)
    item = demonstration_item(tiny_project, round_=round_)
    author = writer(tiny_project)
    lease = assignment_lease_next(project=tiny_project, annotator=author)
    assert lease.comparison_id == item.pk
    submit(client_for(author), lease.pk, text="It calls itself.")
    pipeline.round_finish(round=round_)
    drive_runs(round_, log=lambda message: None)
    chain = TrainingRun.objects.filter(round=round_, chained=True).order_by("id")
    kinds = list(chain.values_list("kind", flat=True))
    assert kinds == [RunKind.SFT, RunKind.EVALUATE]
    assert (
        chain.get(kind=RunKind.EVALUATE).input_version == chain.get(kind=RunKind.SFT).output_version
    )
