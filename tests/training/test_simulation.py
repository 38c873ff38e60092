"""Simulated annotators: oracles, noise, and judging through the real service layer."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import (
    Comparison,
    ComparisonAnswer,
    ComparisonStatus,
    Demonstration,
    FeedbackKind,
    Judgment,
    JudgmentSource,
    Ranking,
    Rating,
    RatingScale,
    Response,
)
from config.errors import ApplicationError
from tests.factories import PromptFactory, ResponseFactory
from training.simulation import (
    KeywordOracle,
    ShorterOracle,
    oracle_from_spec,
    simulate_judging,
)

pytestmark = pytest.mark.django_db


def test_shorter_oracle_prefers_answers_under_the_limit_then_the_shorter():
    oracle = ShorterOracle(max_words=5)
    assert oracle.prefer("q", "one two three", "one two three four five six") == 1.0
    # Both over the limit: the shorter still wins, so every pair teaches something.
    assert oracle.prefer("q", "a b c d e f g h", "a b c d e f") == 0.0
    assert oracle.prefer("q", "a b", "c d") == 0.5
    assert ShorterOracle().prefer("q", "a b c", "a b") == 0.0


def test_keyword_oracle_counts_mentions_case_insensitively():
    oracle = KeywordOracle(("python", "code"))
    assert oracle.prefer("q", "Python code, more CODE", "python") == 1.0
    assert oracle.prefer("q", "nothing", "Some code") == 0.0
    assert oracle.prefer("q", "pythonic", "cod") == 0.5  # whole words only


def test_oracle_specs_are_parsed_and_bad_ones_explained(tmp_path):
    assert oracle_from_spec("shorter:80") == ShorterOracle(max_words=80)
    assert oracle_from_spec("contains:a, b") == KeywordOracle(("a", "b"))
    for bad, message in (
        ("shorter:many", "word count"),
        ("contains:", "name the words"),
        (f"reward:{tmp_path / 'missing'}", "reward-model folder"),
        ("psychic", "Unknown oracle"),
    ):
        with pytest.raises(ApplicationError, match=message):
            oracle_from_spec(bad)


def external_pairs(project, texts: list[tuple[str, str]]) -> list[Comparison]:
    pairs = []
    for index, (first, second) in enumerate(texts):
        prompt = PromptFactory(project=project, text=f"question {index}")
        a = ResponseFactory(prompt=prompt, text=first, source="external", model_version=None)
        b = ResponseFactory(prompt=prompt, text=second, source="external", model_version=None)
        pairs.append(
            Comparison.objects.create(
                project=project, prompt=prompt, response_a=a, response_b=b, required_annotations=2
            )
        )
    return pairs


def picked_response(judgment: Judgment) -> int:
    return judgment.left_response_id if judgment.choice == "left" else judgment.right_response_id


def test_simulated_judgments_record_the_oracles_side_whatever_the_display_order(project):
    pairs = external_pairs(project, [("short", "a much longer answer")] * 3 + [("x y z", "w")] * 3)
    report = simulate_judging(project=project, oracle=ShorterOracle(), annotators=2)
    assert report.judgments == 12
    assert set(Comparison.objects.values_list("status", flat=True)) == {ComparisonStatus.COMPLETE}
    for judgment in Judgment.objects.select_related("comparison"):
        shorter_id = min(
            (judgment.comparison.response_a, judgment.comparison.response_b),
            key=lambda r: len(r.text.split()),
        ).pk
        picked = (
            judgment.left_response_id if judgment.choice == "left" else judgment.right_response_id
        )
        assert picked == shorter_id
        assert judgment.source == JudgmentSource.SIMULATED
    assert Judgment.objects.filter(comparison=pairs[0]).count() == 2  # overlap respected


def test_noise_flips_that_share_of_decided_judgments(project):
    external_pairs(project, [("short", "a longer answer")] * 4)
    report = simulate_judging(project=project, oracle=ShorterOracle(), noise=1.0, annotators=1)
    assert report.flipped == 4
    for judgment in Judgment.objects.select_related("comparison__response_b"):
        picked = (
            judgment.left_response_id if judgment.choice == "left" else judgment.right_response_id
        )
        assert picked == judgment.comparison.response_b_id  # always the longer one


def test_limit_stops_early_and_a_later_call_goes_on(project):
    external_pairs(project, [("a", "b c")] * 5)
    assert simulate_judging(project=project, oracle=ShorterOracle(), limit=2).judgments == 2
    assert simulate_judging(project=project, oracle=ShorterOracle(), annotators=2).judgments == 8


def test_simulate_annotators_command(project, capsys):
    external_pairs(project, [("a", "b c")] * 2)
    call_command("simulate_annotators", project=project.slug, oracle="shorter", annotators=1)
    assert "2 judgments by the shorter oracle" in capsys.readouterr().out
    with pytest.raises(CommandError) as bad:
        call_command("simulate_annotators", project=project.slug, oracle="contains:")
    assert bad.value.returncode == 2
    with pytest.raises(CommandError) as noisy:
        call_command("simulate_annotators", project=project.slug, noise=2.0)
    assert noisy.value.returncode == 2 and "noise" in str(noisy.value)


def test_shorter_oracles_rewrite_keeps_whole_sentences_within_half_its_limit():
    oracle = ShorterOracle(max_words=8)
    text = "One two three. Four five six. Seven eight nine ten."
    assert oracle.rewrite("q", text) == "One two three."
    assert oracle.rewrite("q", "one two three four five six") == "one two three four"
    assert oracle.prefer("q", oracle.rewrite("q", text), text) == 1.0


def item_of(project, kind, texts) -> Comparison:
    prompt = PromptFactory(project=project, text=f"question of {kind}")
    answers = [ResponseFactory(prompt=prompt, text=text) for text in texts]
    item = Comparison.objects.create(
        project=project,
        prompt=prompt,
        response_a=answers[0],
        response_b=answers[1],
        kind=kind,
        required_annotations=1,
    )
    if kind == FeedbackKind.RANKING:
        ComparisonAnswer.objects.bulk_create(
            ComparisonAnswer(comparison=item, response=answer, position=i)
            for i, answer in enumerate(answers)
        )
    return item


def test_simulated_annotators_answer_every_feedback_kind_by_the_oracle(project):
    project.rating_scale = RatingScale.LIKERT_7
    project.save(update_fields=["rating_scale"])
    long_answer = "A long answer. It goes on and on for a while. And further still."
    written = item_of(project, FeedbackKind.DEMONSTRATION, [long_answer, "Short. Very."])
    rated = item_of(project, FeedbackKind.RATING, ["a b c d", "a"])
    ranked = item_of(project, FeedbackKind.RANKING, ["a b c", "a", "a b c d e", "x"])

    report = simulate_judging(project=project, oracle=ShorterOracle(max_words=4), annotators=1)

    assert report.judgments == 3
    demonstration = Demonstration.objects.get(comparison=written)
    assert demonstration.edited_from_id == written.response_b_id  # the shorter one, rewritten
    assert demonstration.text == "Short. Very."
    rating = Rating.objects.get(comparison=rated)
    a_score, b_score = (
        (rating.left_score, rating.right_score)
        if rating.left_response_id == rated.response_a_id
        else (rating.right_score, rating.left_score)
    )
    assert (a_score, b_score) == (2, 6)
    ranking = Ranking.objects.get(comparison=ranked)
    text_of = dict(Response.objects.filter(prompt=ranked.prompt).values_list("pk", "text"))
    by_text = {text_of[int(response_id)]: rank for response_id, rank in ranking.ranks.items()}
    # Shortest first, the two one-word answers tied, the one over the limit last.
    assert by_text == {"a": 1, "x": 1, "a b c": 3, "a b c d e": 4}
    assert Comparison.objects.filter(status=ComparisonStatus.COMPLETE).count() == 3
