"""Rankings through the platform: a round asks some prompts for a ranking of k answers,
annotators rank them through the judging API (ties allowed), ranked pairs (Tideman) merges the
item's rankings into one order, and its pairs reach the TRL export and the training rows like
any pairwise comparison."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from annotate.feedback.ranking import ranked_pairs_consensus, ranking_pairs
from annotate.models import (
    Comparison,
    ComparisonAnswer,
    FeedbackKind,
    MemberRole,
    Ranking,
    Round,
)
from annotate.services import comparisons_create_for_round, membership_set, round_open
from registry.selectors import active_policy
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory, UserFactory
from training import pipeline, runner
from training.models import RunStatus
from training.pairing import feedback_kinds_of_prompts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

A, B, C, D = 11, 12, 13, 14
QUALITY = ["Best answer.", "Good answer.", "Fair answer.", "Poor answer."]


def pairs_of(rankings):
    return {(p.chosen, p.rejected, p.tie, p.strength) for p in ranking_pairs(rankings)}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ranker(project):
    user = UserFactory()
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    return user


def ranking_item(project, texts=QUALITY, *, required: int = 1) -> Comparison:
    round_ = Round.objects.filter(project=project).first() or round_open(project=project)
    prompt = PromptFactory(project=project, text="Name a prime number.")
    answers = [ResponseFactory(prompt=prompt, round=round_, text=text) for text in texts]
    item = ComparisonFactory(
        prompt=prompt,
        round=round_,
        kind=FeedbackKind.RANKING,
        response_a=answers[0],
        response_b=answers[1],
        required_annotations=required,
    )
    ComparisonAnswer.objects.bulk_create(
        ComparisonAnswer(comparison=item, response=answer, position=i)
        for i, answer in enumerate(answers)
    )
    return item


def submit(client, assignment_id: int, **body):
    return client.post(
        f"/api/assignments/{assignment_id}/submit/", {"kind": "ranking", **body}, format="json"
    )


def honest_ranks(leased) -> list[int]:
    """Ranks by the text's quality (QUALITY's order), in the order shown."""
    return [QUALITY.index(answer["text"]) + 1 for answer in leased["answers"]]


# --- ranked pairs, by hand --------------------------------------------------------------------


def test_a_ranking_of_four_without_ties_resolves_to_its_six_pairs():
    consensus = ranked_pairs_consensus([{A: 1, B: 2, C: 3, D: 4}])
    assert consensus.order == [[A], [B], [C], [D]]
    # Strength by the gap: adjacent slight, one between clear, two between strong.
    assert pairs_of([{A: 1, B: 2, C: 3, D: 4}]) == {
        (A, B, False, "slight"),
        (A, C, False, "clear"),
        (A, D, False, "strong"),
        (B, C, False, "slight"),
        (B, D, False, "clear"),
        (C, D, False, "slight"),
    }
    assert all(pair.agreement == 1.0 for pair in consensus.pairs)


def test_tied_answers_give_tie_pairs_and_share_a_level():
    consensus = ranked_pairs_consensus([{A: 2, B: 1, C: 2, D: 3}])
    assert consensus.order == [[B], [A, C], [D]]
    assert pairs_of([{A: 2, B: 1, C: 2, D: 3}]) == {
        (B, A, False, "slight"),
        (B, C, False, "slight"),
        (B, D, False, "clear"),
        (A, C, True, None),  # tied: in item order
        (A, D, False, "slight"),
        (C, D, False, "slight"),
    }
    everything_equal = ranking_pairs([{A: 1, B: 1, C: 1}])
    assert [(p.chosen, p.rejected, p.tie) for p in everything_equal] == [
        (A, B, True),
        (A, C, True),
        (B, C, True),
    ]


def test_a_condorcet_cycle_across_three_annotators_is_broken_by_ranked_pairs():
    # Each annotator puts D last; on A, B, C they go round a cycle:
    #   1: A > B > C > D     2: B > C > A > D     3: C > A > B > D
    # Margins: A>B 2-1, B>C 2-1, C>A 2-1 (a cycle, each margin 1); A>D, B>D, C>D 3-0 (margin 3).
    # Locked strongest first: A>D, B>D, C>D. The three margins of 1 tie (2 rankings for each
    # winner), so the first ranking breaks it: A>B (its winner is first there), then B>C;
    # C>A would close the cycle A>B>C>A and is skipped. Consensus A > B > C > D.
    # A>C comes from the locked chain A>B>C: only ranking 1 agrees (1/3), a gap of 2 (clear),
    # one step weaker for the low agreement: slight.
    rankings = [
        {A: 1, B: 2, C: 3, D: 4},
        {B: 1, C: 2, A: 3, D: 4},
        {C: 1, A: 2, B: 3, D: 4},
    ]
    consensus = ranked_pairs_consensus(rankings)
    assert consensus.order == [[A], [B], [C], [D]]
    by_pair = {(p.chosen, p.rejected): p for p in consensus.pairs}
    assert set(by_pair) == {(A, B), (B, C), (A, C), (A, D), (B, D), (C, D)}
    assert [by_pair[A, B].agreement, by_pair[B, C].agreement] == [2 / 3, 2 / 3]
    assert by_pair[A, C].agreement == pytest.approx(1 / 3)
    assert {pair: p.strength for pair, p in by_pair.items()} == {
        (A, B): "slight",
        (B, C): "slight",
        (A, C): "slight",
        (A, D): "strong",
        (B, D): "clear",
        (C, D): "slight",
    }
    # The tie-breaking ballot is the first ranking: starting from annotator 2's, B leads.
    assert ranked_pairs_consensus(rankings[1:] + rankings[:1]).order == [[B], [C], [A], [D]]


def test_a_clear_majority_wins_whatever_the_first_ranking_says():
    rankings = [{A: 3, B: 2, C: 1}, {A: 1, B: 2, C: 3}, {A: 1, B: 2, C: 3}]
    assert ranked_pairs_consensus(rankings).order == [[A], [B], [C]]


# --- through the API ------------------------------------------------------------------------


def test_a_ranking_is_leased_blind_submitted_once_and_exported_as_pairs(project, admin_api):
    item = ranking_item(project)
    alice = ranker(project)
    client = client_for(alice)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert leased["kind"] == "ranking"
    assert sorted(answer["text"] for answer in leased["answers"]) == sorted(QUALITY)
    assert set(leased["answers"][0]) == {"text"}  # no ids, no model
    assignment = leased["assignment_id"]

    for bad in ([1, 2, 3], [1, 2, 3, 5], [0, 1, 2, 3], [1, 2, 3, 4, 4]):
        refused = submit(client, assignment, ranks=bad)
        assert refused.status_code == 400, (bad, refused.json())
        assert "rank" in json.dumps(refused.json())
    assert not Ranking.objects.exists()
    item.refresh_from_db()
    assert item.judgment_count == 0

    ranks = honest_ranks(leased)
    key = str(uuid.uuid4())
    stored = submit(client, assignment, ranks=ranks, submission_key=key, time_spent_ms=4000)
    assert stored.status_code == 201, stored.json()
    assert stored.json()["ranks"] == ranks
    ranking = Ranking.objects.get()
    texts = dict(item.listed_answers.values_list("response_id", "response__text"))
    assert {texts[int(rid)]: rank for rid, rank in ranking.ranks.items()} == {
        text: i + 1 for i, text in enumerate(QUALITY)
    }
    assert [texts[rid] for rid in ranking.shown] == [a["text"] for a in leased["answers"]]
    item.refresh_from_db()
    assert item.status == "complete"

    again = submit(client, assignment, ranks=ranks, submission_key=key)
    assert again.status_code == 200 and again.json()["id"] == ranking.pk
    other = submit(client, assignment, ranks=[1, 1, 1, 1])
    assert other.status_code == 409
    assert "You already judged this pair: ranks" in other.json()["detail"]
    assert Ranking.objects.count() == 1

    export = admin_api.get(f"/api/projects/{project.pk}/export/trl/")
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert len(rows) == 6
    assert all(row["comparison_id"] == item.pk for row in rows)
    assert all(row["selection"]["feedback"] == "ranking" for row in rows)
    ordered = {(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in rows}
    assert ordered == {(QUALITY[i], QUALITY[j]) for i in range(4) for j in range(i + 1, 4)}
    strength = {(row["chosen"][0]["content"], row["rejected"][0]["content"]): row["strength"]
                for row in rows}  # fmt: skip
    assert strength[QUALITY[0], QUALITY[3]] == "strong"

    train, _ = runner.preference_rows(project)
    heldout, _ = runner.preference_rows(project, split="heldout")
    assert len(train) + len(heldout) == 6
    assert all(row.target == 1.0 and row.weight == 1.0 for row in train + heldout)


def test_ties_in_a_ranking_export_as_ties_when_asked(project, admin_api):
    ranking_item(project, texts=QUALITY[:3])
    client = client_for(ranker(project))
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    ranks = [1 if answer["text"] != QUALITY[2] else 3 for answer in leased["answers"]]
    assert submit(client, leased["assignment_id"], ranks=ranks).status_code == 201
    base = f"/api/projects/{project.pk}/export/trl/"
    rows = [
        json.loads(line)
        for line in b"".join(admin_api.get(f"{base}?include_ties=true").streaming_content)
        .decode()
        .splitlines()
    ]
    assert sorted(row["tie"] for row in rows) == [False, False, True]
    (tie,) = [row for row in rows if row["tie"]]
    assert {tie["chosen"][0]["content"], tie["rejected"][0]["content"]} == set(QUALITY[:2])
    rows, _ = runner.preference_rows(project)
    heldout, _ = runner.preference_rows(project, split="heldout")
    assert sorted(row.target for row in rows + heldout) == [0.5, 1.0, 1.0]


def test_a_pairwise_body_on_a_ranking_item_is_refused(project):
    ranking_item(project)
    client = client_for(ranker(project))
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    response = client.post(
        f"/api/assignments/{leased['assignment_id']}/submit/", {"choice": "left"}, format="json"
    )
    assert response.status_code == 400 and "ranking" in response.json()["detail"]


# --- rounds and settings ------------------------------------------------------------------------


def test_a_round_makes_ranking_items_of_the_newest_answers_and_pairs_where_too_few(project):
    project.ranking_size = 3
    project.save()
    round_ = round_open(project=project)
    many, few = PromptFactory(project=project), PromptFactory(project=project)
    policy = active_policy(project_id=project.pk)
    answers = [ResponseFactory(prompt=many, round=round_, model_version=policy) for _ in range(4)]
    for _ in range(2):
        ResponseFactory(prompt=few, round=round_, model_version=policy)
    created = comparisons_create_for_round(
        round=round_, kind_of_prompt={many.pk: FeedbackKind.RANKING, few.pk: FeedbackKind.RANKING}
    )
    kinds = {c.prompt_id: c.kind for c in created}
    assert kinds == {many.pk: FeedbackKind.RANKING, few.pk: FeedbackKind.PAIRWISE}
    item = Comparison.objects.get(prompt=many)
    listed = list(item.listed_answers.values_list("response_id", flat=True))
    assert listed == [answer.pk for answer in answers[1:]]  # the three newest, in id order
    assert {item.response_a_id, item.response_b_id} <= set(listed)
    assert not ComparisonAnswer.objects.filter(comparison__prompt=few).exists()


def test_the_shares_split_the_training_prompts_by_kind_never_a_held_out_one():
    heldout = set(range(0, 300, 3))
    shares = {
        FeedbackKind.DEMONSTRATION: 0.2,
        FeedbackKind.RATING: 0.2,
        FeedbackKind.RANKING: 0.4,
    }
    kinds = feedback_kinds_of_prompts(
        list(range(300)), round_number=3, shares=shares, is_heldout=heldout.__contains__
    )
    assert not set(kinds) & heldout
    ranked = [p for p, kind in kinds.items() if kind == FeedbackKind.RANKING]
    assert 0.3 < len(ranked) / 200 < 0.5


def test_the_database_refuses_shares_above_one_and_a_ranking_size_out_of_range(project):
    project.demonstration_share, project.rating_share, project.ranking_share = 0.3, 0.3, 0.5
    with pytest.raises(IntegrityError), transaction.atomic():
        project.save()
    project.refresh_from_db()
    project.ranking_size = 7
    with pytest.raises(IntegrityError), transaction.atomic():
        project.save()


def test_a_round_generates_enough_answers_for_its_ranking_items(tiny_project):
    tiny_project.ranking_share = 1.0
    tiny_project.ranking_size = 3
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    tiny_project.save()
    prompts = [PromptFactory(project=tiny_project, text=f"Topic {i}.") for i in range(6)]
    round_, run = pipeline.round_start(project=tiny_project)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    kinds = dict(round_.comparisons.values_list("prompt_id", "kind"))
    for prompt in prompts:
        assert round_.responses.filter(prompt=prompt).count() == 3
        heldout = pipeline.prompt_is_heldout(prompt.pk, 0.5)
        assert kinds[prompt.pk] == (FeedbackKind.PAIRWISE if heldout else FeedbackKind.RANKING)
    for item in round_.comparisons.filter(kind=FeedbackKind.RANKING):
        assert item.listed_answers.count() == 3


def test_the_crowd_model_settles_an_even_split_of_rankings_by_the_reliable_ranker(project):
    from tests.training.test_crowd_in_the_loop import _careful_and_contrary, _settings

    careful, contrary = _careful_and_contrary(project)  # gold pairs tell them apart
    ranking_item(project, required=2)

    def reversed_ranks(leased) -> list[int]:
        return [len(QUALITY) + 1 - rank for rank in honest_ranks(leased)]

    # The contrary ranker goes first, so no tie-break by the first ranking favours the careful.
    for user, ranks_of in ((contrary, reversed_ranks), (careful, honest_ranks)):
        client = client_for(user)
        leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
        assert leased["kind"] == "ranking"
        assert submit(client, leased["assignment_id"], ranks=ranks_of(leased)).status_code == 201

    def ranked_rows() -> set[tuple[str, str, float]]:
        rows, _ = runner.preference_rows(project)
        return {(r.chosen, r.rejected, r.target) for r in rows if r.chosen in QUALITY}

    honest = {(QUALITY[i], QUALITY[j], 1.0) for i in range(4) for j in range(i + 1, 4)}
    _settings(project)
    assert ranked_rows() == set()  # majority: one ranking against the other, nothing decided
    _settings(project, label_resolution="crowd")
    assert ranked_rows() == honest
    rows, _ = runner.preference_rows(project)
    weights = [row.weight for row in rows if row.chosen in QUALITY]
    assert len(weights) == 6 and all(0.8 < weight <= 1.0 for weight in weights)
    # The rankings also count toward the rankers' reliability.
    from annotate.selectors import project_crowd_fit

    fit, labels = project_crowd_fit(project=project)
    assert len(labels.ranked) == 6
    assert fit.votes[careful.pk] == 12 + 6  # twelve pairs judged, six ranked
