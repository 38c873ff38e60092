"""Simulated annotators: judge open pairs through the real service layer, with an oracle.

The whole loop can then run headless (tests, benchmarks, `run_loop`): leases, blind left/right
order, exactly-once submits, overlap and the round's quota trigger all behave as for people.

An oracle says which of two answers it prefers: 1.0 the first, 0.0 the second, 0.5 a tie.
- `shorter[:N]`: prefers answers under N words, then the shorter one (N unset: just shorter).
- `contains:word1,word2`: prefers the answer mentioning the given words more often.
- `reward:<artifact folder>`: prefers the answer a trained reward model scores higher.
A noise rate flips that many decided judgments at random, like a careless person.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from annotate.models import (
    Assignment,
    JudgmentSource,
    MemberRole,
    Membership,
    Project,
    Round,
    RoundStatus,
)
from annotate.services import assignment_lease_next, judgment_submit, membership_set
from config.errors import ApplicationError
from config.users import User

if TYPE_CHECKING:
    from training.engine.evaluate import RewardJudge

PromptValue = str | list[dict[str, str]]
SIMULATED_USER_PREFIX = "simulated-"
WORD = re.compile(r"\w+", re.UNICODE)


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
            choice = _judge(lease, oracle, noise, rng, report)
            judgment_submit(
                assignment_id=lease.pk,
                annotator=user,
                choice=choice,
                strength="clear" if choice in ("left", "right") else None,
                source=JudgmentSource.SIMULATED,
            )
            report.judgments += 1
            report.choices[choice] = report.choices.get(choice, 0) + 1
            if on_judgment is not None:
                on_judgment(report.judgments)
            if limit is not None and report.judgments >= limit:
                break
    return report


def _judge(
    lease: Assignment, oracle: Oracle, noise: float, rng: random.Random, report: SimulationReport
) -> str:
    comparison = lease.comparison
    prompt = comparison.prompt.messages or comparison.prompt.text
    preference = oracle.prefer(prompt, comparison.response_a.text, comparison.response_b.text)
    if preference != 0.5 and rng.random() < noise:
        preference = 1.0 - preference
        report.flipped += 1
    return _choice_for(preference, lease.a_on_left)
