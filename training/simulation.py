"""Simulated annotators: judge open pairs through the real service layer, with an oracle.

The whole loop can then run headless (tests, benchmarks, `run_loop`): leases, blind left/right
order, exactly-once submits, overlap and the round's quota trigger all behave as for people.

An oracle says which of two answers it prefers: 1.0 the first, 0.0 the second, 0.5 a tie.
- `shorter[:N]`: prefers answers under N words, then the shorter one (N unset: just shorter).
- `contains:word1,word2`: prefers the answer mentioning the given words more often.
- `reward:<artifact folder>`: prefers the answer a trained reward model scores higher.
A noise rate flips that many decided judgments at random, like a careless person.

Every feedback kind of a round is answered, so a project with demonstrations, ratings or
rankings in its mix runs headless too:
- a demonstration is the better of the two answers shown, rewritten where the oracle knows
  how (`ShorterOracle` keeps whole sentences up to half its word limit), sent as edited from
  that side;
- a rating scores the two answers against each other (the preferred one high, the other low;
  equal ones alike), on the project's scale;
- a ranking orders the k answers by the oracle's pairwise preferences (equal ones tie); the
  noise rate flips pairwise choices, written answers' and ratings' preferences, not rankings.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from annotate.feedback.ranking import item_response_ids, shown_order
from annotate.models import (
    THUMBS_DOWN,
    THUMBS_UP,
    Assignment,
    FeedbackKind,
    JudgmentSource,
    MemberRole,
    Membership,
    Project,
    RatingScale,
    Response,
    Round,
    RoundStatus,
)
from annotate.services import assignment_lease_next, feedback_submit, membership_set
from config.errors import ApplicationError
from config.users import User

if TYPE_CHECKING:
    from training.engine.evaluate import RewardJudge

PromptValue = str | list[dict[str, str]]
SIMULATED_USER_PREFIX = "simulated-"
WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Oracle(Protocol):
    @property
    def name(self) -> str: ...

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        """1.0 when `first` is better, 0.0 when `second` is, 0.5 for a tie."""


def word_count(text: str) -> int:
    return len(WORD.findall(text))


def _compare(first: Any, second: Any) -> float:
    """1.0 if first < second (lower is better), 0.0 if greater, 0.5 if equal."""
    if first == second:
        return 0.5
    return 1.0 if first < second else 0.0


@dataclass(frozen=True)
class ShorterOracle:
    """Prefers answers under `max_words` words, then the shorter of the two."""

    max_words: int | None = None
    name: str = "shorter"

    def cost(self, text: str) -> tuple[bool, int]:
        words = word_count(text)
        return (self.max_words is not None and words >= self.max_words, words)

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        return _compare(self.cost(first), self.cost(second))

    def rewrite(self, prompt: PromptValue, text: str) -> str:
        """What a writer following this oracle's guideline makes of `text`: whole sentences
        while they stay within half the word limit (the first one cut there if it alone is
        longer), so the written answer is one this oracle prefers to both shown."""
        budget = max(1, (self.max_words or 2 * word_count(text)) // 2)
        kept: list[str] = []
        for sentence in SENTENCE_END.split(text.strip()):
            if word_count(" ".join([*kept, sentence])) > budget:
                break
            kept.append(sentence)
        if kept:
            return " ".join(kept)
        words = text.split()
        return " ".join(words[:budget]) if words else text


@dataclass(frozen=True)
class KeywordOracle:
    """Prefers the answer that mentions the given words more often (case-insensitive)."""

    words: tuple[str, ...]
    name: str = "contains"

    def mentions(self, text: str) -> int:
        tokens = [token.lower() for token in WORD.findall(text)]
        return sum(tokens.count(word.lower()) for word in self.words)

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        return _compare(-self.mentions(first), -self.mentions(second))


class RewardModelOracle:
    """Prefers the answer a trained reward model scores higher; the model loads on first use."""

    name = "reward"

    def __init__(self, artifact: str | Path, cache_dir: Path | None = None) -> None:
        self.artifact = Path(artifact)
        self.cache_dir = cache_dir
        self._judge: RewardJudge | None = None

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        # The engine loads torch: imported only when a reward-model oracle is first used.
        from training.engine.data import PreferenceRow
        from training.engine.evaluate import RewardJudge

        if self._judge is None:
            self._judge = RewardJudge(self.artifact, cache_dir=self.cache_dir)
        scores = self._judge.pair_scores([PreferenceRow(prompt, first, second)])[0]
        return _compare(-float(scores[0]), -float(scores[1]))


def oracle_from_spec(spec: str, *, cache_dir: Path | None = None) -> Oracle:
    """`shorter`, `shorter:80`, `contains:foo,bar` or `reward:/path/to/reward/artifact`."""
    kind, _, argument = spec.partition(":")
    if kind == "shorter":
        if argument and not argument.isdigit():
            raise ApplicationError(f"oracle {spec!r}: shorter takes a word count, e.g. shorter:80")
        return ShorterOracle(max_words=int(argument) if argument else None)
    if kind == "contains":
        words = tuple(word.strip() for word in argument.split(",") if word.strip())
        if not words:
            raise ApplicationError(f"oracle {spec!r}: name the words, e.g. contains:python,code")
        return KeywordOracle(words)
    if kind == "reward":
        if not argument or not Path(argument).is_dir():
            raise ApplicationError(f"oracle {spec!r}: give a reward-model folder, reward:<dir>.")
        return RewardModelOracle(argument, cache_dir=cache_dir)
    raise ApplicationError(
        f"Unknown oracle {spec!r}: use shorter[:N], contains:word,... or reward:<folder>."
    )


def simulated_annotators(project: Project, count: int) -> list[User]:
    """`count` simulated accounts with annotator membership (created once, reused after)."""
    users = []
    for index in range(1, count + 1):
        user, created = User.objects.get_or_create(username=f"{SIMULATED_USER_PREFIX}{index}")
        if created:
            user.set_unusable_password()  # nobody logs in as a simulation
            user.save(update_fields=["password"])
        membership = Membership.objects.filter(project=project, user=user).first()
        if membership is None:
            membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
        users.append(user)
    return users


@dataclass
class SimulationReport:
    judgments: int = 0
    flipped: int = 0
    choices: dict[str, int] = field(default_factory=dict)


def _choice_for(preference: float, a_on_left: bool) -> str:
    if preference == 0.5:
        return "tie"
    a_wins = preference > 0.5
    return "left" if a_wins == a_on_left else "right"


def simulate_judging(
    *,
    project: Project,
    oracle: Oracle,
    noise: float = 0.0,
    annotators: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    round: Round | None = None,
    on_judgment: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Judge leased pairs until none is left (or `limit`, or `round` closes); returns counts.

    Each simulated annotator asks for its next pair in turn, exactly as a person's browser
    would, so overlap, gold pairs and the quota trigger all apply.
    """
    if not 0 <= noise <= 1:
        raise ApplicationError(f"noise={noise}: use a rate between 0 and 1.")
    users = simulated_annotators(project, annotators or project.required_annotations)
    rng = random.Random(seed)
    report = SimulationReport()
    active = list(users)
    while active and (limit is None or report.judgments < limit):
        if (
            round is not None
            and not Round.objects.filter(pk=round.pk, status=RoundStatus.OPEN).exists()
        ):
            break  # the quota trigger closed it
        for user in list(active):
            lease = assignment_lease_next(project=project, annotator=user)
            if lease is None:
                active.remove(user)
                continue
            kind, values = _answer(lease, oracle, noise, rng, report)
            feedback_submit(
                assignment_id=lease.pk,
                annotator=user,
                kind=kind,
                values=values,
                source=JudgmentSource.SIMULATED,
            )
            report.judgments += 1
            said = values.get("choice", kind)
            report.choices[said] = report.choices.get(said, 0) + 1
            if on_judgment is not None:
                on_judgment(report.judgments)
            if limit is not None and report.judgments >= limit:
                break
    return report


def _answer(
    lease: Assignment, oracle: Oracle, noise: float, rng: random.Random, report: SimulationReport
) -> tuple[str, dict[str, Any]]:
    """The feedback kind of the leased item and what the simulated annotator submits on it."""
    comparison = lease.comparison
    prompt = comparison.prompt.messages or comparison.prompt.text
    if comparison.kind == FeedbackKind.RANKING:
        return comparison.kind, {"ranks": _ranks(lease, oracle, prompt)}
    preference = oracle.prefer(prompt, comparison.response_a.text, comparison.response_b.text)
    if preference != 0.5 and rng.random() < noise:
        preference = 1.0 - preference
        report.flipped += 1
    if comparison.kind == FeedbackKind.DEMONSTRATION:
        return comparison.kind, _demonstration(lease, oracle, prompt, preference)
    if comparison.kind == FeedbackKind.RATING:
        return comparison.kind, _rating(lease, preference)
    choice = _choice_for(preference, lease.a_on_left)
    strength = "clear" if choice in ("left", "right") else None
    return FeedbackKind.PAIRWISE, {"choice": choice, "strength": strength}


def _demonstration(
    lease: Assignment, oracle: Oracle, prompt: PromptValue, preference: float
) -> dict[str, Any]:
    """The better answer shown (the left one on a tie), rewritten where the oracle can."""
    comparison = lease.comparison
    a_better = preference >= 0.5 if lease.a_on_left else preference > 0.5
    better = comparison.response_a if a_better else comparison.response_b
    rewrite = getattr(oracle, "rewrite", None)
    text = rewrite(prompt, better.text) if rewrite is not None else better.text
    if not text.strip():  # an empty demonstration is refused: write a refusal anew
        return {"text": "I cannot answer that.", "edited_from": None}
    side = "left" if a_better == lease.a_on_left else "right"
    return {"text": text, "edited_from": side}


def _rating(lease: Assignment, preference: float) -> dict[str, Any]:
    """Scores relative to the other answer shown: a judge without an absolute scale."""
    thumbs = lease.comparison.project.rating_scale == RatingScale.THUMBS
    high, middle, low = (THUMBS_UP, THUMBS_UP, THUMBS_DOWN) if thumbs else (6, 4, 2)
    a_score, b_score = {1.0: (high, low), 0.0: (low, high)}.get(preference, (middle, middle))
    left, right = (a_score, b_score) if lease.a_on_left else (b_score, a_score)
    return {"left_score": left, "right_score": right}


def _ranks(lease: Assignment, oracle: Oracle, prompt: PromptValue) -> list[int]:
    """One rank per answer in the order this lease shows them: 1 the best, equals tie."""
    shown = shown_order(item_response_ids(lease.comparison_id), assignment_id=lease.pk)
    texts = dict(Response.objects.filter(pk__in=shown).values_list("pk", "text"))

    def better_first(first: int, second: int) -> int:
        return round(1 - 2 * oracle.prefer(prompt, texts[first], texts[second]))

    best_first = sorted(shown, key=functools.cmp_to_key(better_first))
    rank_of: dict[int, int] = {}
    for index, response_id in enumerate(best_first):
        tied = index and better_first(best_first[index - 1], response_id) == 0
        rank_of[response_id] = rank_of[best_first[index - 1]] if tied else index + 1
    return [rank_of[response_id] for response_id in shown]
