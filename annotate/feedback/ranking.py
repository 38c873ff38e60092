"""Rankings: the annotator orders k answers to one prompt (k = Project.ranking_size, 3 to 6).

The item is a comparison of kind "ranking" whose answers are listed in ComparisonAnswer (in a
fixed order; response_a and response_b are two of them). Each lease shows them in its own
shuffled order (`shown_order`, drawn from the lease), labelled by position only. A submit
carries one rank per answer in the order shown: 1 the best, equal ranks a tie, each from 1 to
k. The stored Ranking keeps the ranks by response id and the order shown.

Resolution (`ranked_pairs_consensus`) merges the item's rankings into one consensus order by
ranked pairs (Tideman) and turns it into pairs with a strength, which `resolved_ranking_pairs`
yields as the same ResolvedPair that pairwise items give: the reward model, DPO and the TRL
export read them unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Prefetch
from rest_framework import serializers

from annotate import queue
from annotate.crowd import RankedKey
from annotate.feedback.base import JudgmentFacts, Stored
from annotate.feedback.pairwise import ResolvedPair, prompt_messages
from annotate.models import (
    Comparison,
    ComparisonAnswer,
    ComparisonStatus,
    FeedbackKind,
    Outcome,
    Project,
    Ranking,
    Strength,
)
from annotate.queue import LeasedItem
from config.errors import ApplicationError
from config.users import User
from config.validation import BoundedIntegerField

MIN_RANKING_SIZE, MAX_RANKING_SIZE = 3, 6


class RankingSubmitInput(serializers.Serializer[Any]):
    ranks = serializers.ListField(
        child=BoundedIntegerField(min_value=1, max_value=MAX_RANKING_SIZE),
        min_length=MIN_RANKING_SIZE,
        max_length=MAX_RANKING_SIZE,
        help_text="One rank per answer, in the order shown: 1 is the best, equal ranks tie.",
    )
    time_spent_ms = BoundedIntegerField(required=False, min_value=0, max_value=86_400_000)


def shown_order(response_ids: Sequence[int], *, assignment_id: int) -> list[int]:
    """The item's answers in the order one lease shows them: shuffled per lease, so position
    bias averages out, and drawn from the lease id, so the submit knows what was shown."""
    order = list(response_ids)
    seed = hashlib.sha256(f"ranking:{assignment_id}".encode()).digest()
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return order


def item_response_ids(comparison_id: int) -> list[int]:
    """A ranking item's answers in its fixed order."""
    listed = ComparisonAnswer.objects.filter(comparison_id=comparison_id).order_by("position")
    return list(listed.values_list("response_id", flat=True))


def check_ranks(ranks: Sequence[int], size: int) -> None:
    if len(ranks) != size:
        raise ApplicationError(
            f"ranks must have {size} entries, one per answer shown (got {len(ranks)})."
        )
    if any(not 1 <= int(rank) <= size for rank in ranks):
        raise ApplicationError(f"Every rank must be from 1 (best) to {size}.")


def _ranks_said(ranks: Sequence[int]) -> str:
    return "ranks " + ", ".join(str(rank) for rank in ranks)


class Rankings:
    kind = FeedbackKind.RANKING
    submit_input = RankingSubmitInput

    def check(self, values: Mapping[str, Any]) -> None:
        ranks = values.get("ranks")
        if not isinstance(ranks, list | tuple) or not (
            MIN_RANKING_SIZE <= len(ranks) <= MAX_RANKING_SIZE
        ):
            raise ApplicationError(
                f"ranks must list one rank per answer shown "
                f"({MIN_RANKING_SIZE} to {MAX_RANKING_SIZE} of them)."
            )
        # The length against the item's answers is checked once the lease is known (store).
        check_ranks(ranks, len(ranks))

    def annotator_view(self, item: LeasedItem) -> dict[str, Any]:
        listed = (
            ComparisonAnswer.objects.filter(comparison__assignments__id=item.assignment_id)
            .order_by("position")
            .values_list("response_id", "response__text")
        )
        text_of = dict(listed)
        shown = [
            {"text": text_of[response_id]}
            for response_id in shown_order(list(text_of), assignment_id=item.assignment_id)
        ]
        return {
            "assignment_id": item.assignment_id,
            "project_id": item.project_id,
            "kind": item.kind,
            "prompt": {"text": item.prompt_text or None, "messages": item.prompt_messages},
            # The first two shown, for clients that read only a pair; `answers` has all k.
            "left": shown[0],
            "right": shown[1],
            "answers": shown,
            "leased_at": item.leased_at,
            "expires_at": item.expires_at,
        }

    def store_in_one_statement(
        self,
        *,
        assignment_id: int,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Stored | None:
        return None  # a ranking's length is checked against its item: the checked path

    def store(
        self,
        *,
        lease: queue.LeaseToSubmit,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Ranking:
        shown = shown_order(
            item_response_ids(lease.comparison_id), assignment_id=lease.assignment_id
        )
        ranks = [int(rank) for rank in values["ranks"]]
        # Raised inside the submit's transaction: the count taken for it is rolled back.
        check_ranks(ranks, len(shown))
        ranking = Ranking(
            comparison_id=lease.comparison_id,
            annotator=annotator,
            assignment_id=lease.assignment_id,
            shown=shown,
            ranks={str(response_id): rank for response_id, rank in zip(shown, ranks, strict=True)},
            time_spent_ms=values.get("time_spent_ms"),
            source=values["source"],
            submission_key=key,
            created_at=now,
        )
        ranking.save()
        return ranking

    def stored_by(self, *, comparison_id: int, annotator: User) -> Ranking | None:
        return Ranking.objects.filter(comparison_id=comparison_id, annotator=annotator).first()

    def key_used(self, key: uuid.UUID) -> bool:
        return Ranking.objects.filter(submission_key=key).exists()

    def submitted_view(self, stored: Any) -> dict[str, Any]:
        return {
            "id": stored.pk,
            "kind": self.kind,
            "comparison": stored.comparison_id,
            "annotator": stored.annotator_id,
            "ranks": [stored.ranks[str(response_id)] for response_id in stored.shown],
            "time_spent_ms": stored.time_spent_ms,
            "source": stored.source,
            "submission_key": str(stored.submission_key),
            "created_at": stored.created_at,
        }

    def differs(self, stored: Any, values: Mapping[str, Any]) -> str | None:
        given = [stored.ranks[str(response_id)] for response_id in stored.shown]
        return None if given == [int(rank) for rank in values["ranks"]] else _ranks_said(given)

    def label(self, judgment: JudgmentFacts) -> str:
        return "ranking"  # an order of k answers has no nominal label to agree on


# --- ranked pairs: many annotators' rankings of one item into one order, then pairs ----------


@dataclass(frozen=True)
class RankedPair:
    """Two answers of a ranking item as the consensus orders them (ids are Response ids)."""

    chosen: int
    rejected: int  # for a tie, the two answers in item order
    tie: bool
    strength: str | None  # slight / clear / strong; None for a tie
    agreement: float  # share of the rankings that ordered the pair so (for a tie: tied it)
    gap: int  # how many levels apart the consensus puts them (0 for a tie)


@dataclass(frozen=True)
class Consensus:
    order: list[list[int]]  # levels, best first; the answers of one level are tied
    pairs: list[RankedPair]


def _prefers(ranking: Mapping[int, int], x: int, y: int) -> bool:
    return ranking[x] < ranking[y]


def _reaches(edges: Mapping[int, set[int]], start: int, goal: int) -> bool:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt in edges[node] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return False


def ranked_pairs_consensus(rankings: Sequence[Mapping[int, int]]) -> Consensus:
    """One consensus order of an item's answers from its rankings (response id to rank, 1 the
    best, equal ranks tied), by ranked pairs (Tideman), and the pairs it decides.

    1. For every two answers x, y: margin(x, y) = the rankings that put x above y minus those
       that put y above x (a tie counts for neither).
    2. The pairs with a positive margin are locked strongest first (larger margin, then more
       rankings for the winner, then Tideman's tie-breaking ballot: the first ranking, answers
       it ties in item id order), each skipped if it would close a cycle with those locked.
    3. The order: each answer's level is the length of the longest chain of locked pairs above
       it; answers on one level are tied.
    4. Pairs: x over y whenever locked pairs lead from x to y (so a pair beaten in a cycle
       follows the consensus, not its own majority); every other two answers are a tie pair.
       A pair no ranking supports (agreement 0: decided only through others, or a tie no one
       gave) is left out, as pairwise resolution leaves out a split vote.

    Strength, from the gap between the two levels and the agreement: a gap of 1 is slight,
    2 clear, 3 or more strong; one step weaker (never below slight) where fewer than two
    thirds of the rankings ordered the pair as the consensus does.
    """
    if not rankings:
        return Consensus(order=[], pairs=[])
    answers = sorted(rankings[0])
    ballot = sorted(answers, key=lambda answer: (rankings[0][answer], answer))
    place = {answer: i for i, answer in enumerate(ballot)}
    above = {
        (x, y): sum(_prefers(ranking, x, y) for ranking in rankings)
        for x, y in itertools.permutations(answers, 2)
    }
    candidates = [
        (x, y) for x, y in itertools.permutations(answers, 2) if above[x, y] > above[y, x]
    ]
    candidates.sort(
        key=lambda xy: (-(above[xy] - above[xy[1], xy[0]]), -above[xy], place[xy[0]], -place[xy[1]])
    )
    locked: dict[int, set[int]] = {answer: set() for answer in answers}
    for x, y in candidates:
        if not _reaches(locked, y, x):
            locked[x].add(y)
    level: dict[int, int] = {}

    def level_of(answer: int) -> int:
        if answer not in level:
            parents = [x for x in answers if answer in locked[x]]
            level[answer] = 1 + max((level_of(x) for x in parents), default=-1)
        return level[answer]

    depth = max((level_of(answer) for answer in answers), default=0)
    order = [[a for a in answers if level_of(a) == d] for d in range(depth + 1)]
    count = len(rankings)
    pairs = []
    for x, y in itertools.combinations(answers, 2):
        if _reaches(locked, y, x):
            x, y = y, x
        if _reaches(locked, x, y):
            agreement = above[x, y] / count
            gap = level_of(y) - level_of(x)
            pair = RankedPair(x, y, False, _strength(gap, agreement), agreement, gap)
        else:
            tied = sum(ranking[x] == ranking[y] for ranking in rankings)
            pair = RankedPair(x, y, True, None, tied / count, 0)
        if pair.agreement > 0:
            pairs.append(pair)
    return Consensus(order=order, pairs=pairs)


def ranking_pairs(rankings: Sequence[Mapping[int, int]]) -> list[RankedPair]:
    """The pairs an item's rankings resolve to (ranked_pairs_consensus)."""
    return ranked_pairs_consensus(rankings).pairs


def _strength(gap: int, agreement: float) -> str:
    steps = list(Strength.values)  # slight, clear, strong
    step = min(gap, len(steps)) - 1
    if agreement < 2 / 3:
        step -= 1
    return steps[max(step, 0)]


@dataclass(frozen=True)
class RankingVote:
    """One ranking's word on two answers it did not tie: whether the lower id's is better."""

    key: RankedKey
    annotator_id: int
    lower_better: bool


def ranking_votes(*, project: Project) -> list[RankingVote]:
    """Every ranking of the project as two-way votes: one per two answers it did not tie."""
    votes = []
    rankings = Ranking.objects.filter(comparison__project=project).order_by("id")
    for ranking in rankings.only("comparison_id", "annotator_id", "ranks").iterator(2000):
        ranks = {int(key): int(rank) for key, rank in ranking.ranks.items()}
        for lower, higher in itertools.combinations(sorted(ranks), 2):
            if ranks[lower] != ranks[higher]:
                key = (ranking.comparison_id, lower, higher)
                votes.append(RankingVote(key, ranking.annotator_id, ranks[lower] < ranks[higher]))
    return votes


def _tied_by_most(votes: Sequence[Mapping[int, int]], first: int, second: int) -> bool:
    return sum(vote[first] == vote[second] for vote in votes) * 2 > len(votes)


def _crowd_ordered(
    pair: RankedPair,
    item_id: int,
    votes: Sequence[Mapping[int, int]],
    posterior: Mapping[RankedKey, float],
) -> tuple[int, int, float] | None:
    """(chosen, rejected, weight) by the crowd model's posterior, or None where it has no say:
    no decided vote on the pair, or most rankings tied it (a tie stays a tie)."""
    lower, higher = sorted((pair.chosen, pair.rejected))
    p_lower = posterior.get((item_id, lower, higher))
    if p_lower is None or p_lower == 0.5 or _tied_by_most(votes, lower, higher):
        return None
    if p_lower > 0.5:
        return lower, higher, p_lower
    return higher, lower, 1 - p_lower


def _candidate_pairs(
    votes: Sequence[Mapping[int, int]], *, with_undecided: bool
) -> list[RankedPair]:
    """The consensus pairs and, for the crowd model to decide, every pair the consensus left
    out (an even split leaves the answers on one level with no pair between them)."""
    pairs = ranking_pairs(votes)
    if not with_undecided:
        return pairs
    covered = {frozenset((pair.chosen, pair.rejected)) for pair in pairs}
    for first, second in itertools.combinations(sorted(votes[0]), 2):
        if frozenset((first, second)) not in covered:
            pairs.append(RankedPair(first, second, tie=True, strength=None, agreement=0, gap=0))
    return pairs


def resolved_ranking_pairs(
    *,
    project: Project,
    include_ties: bool = False,
    posterior: Mapping[RankedKey, float] | None = None,
) -> Iterator[ResolvedPair]:
    """Every complete ranking item's consensus pairs, as ResolvedPair (comparison_id is the
    item's; selection carries {"feedback": "ranking", ...} and the two response ids). A pair's
    weight is its agreement; pairs of equal texts (after trimming) are left out.

    Given the crowd model's `posterior` (ranking_votes fitted with every other judgment), it
    orders and weighs each pair instead, as it does pairwise items: an even split between a
    reliable and a contrary ranker then still trains, on the reliable one's side."""
    rankings = Ranking.objects.only("id", "comparison", "annotator", "ranks").order_by("id")
    items = (
        Comparison.objects.filter(
            project=project, kind=FeedbackKind.RANKING, status=ComparisonStatus.COMPLETE
        )
        .select_related("prompt")
        .prefetch_related(
            Prefetch("rankings", queryset=rankings),
            Prefetch(
                "listed_answers", queryset=ComparisonAnswer.objects.select_related("response")
            ),
        )
        .order_by("id")
    )
    for item in items.iterator(chunk_size=500):
        given = list(item.rankings.all())
        text_of = {listed.response_id: listed.response.text for listed in item.listed_answers.all()}
        votes = [{int(key): int(rank) for key, rank in r.ranks.items()} for r in given]
        if not votes or any(set(vote) != set(text_of) for vote in votes):
            continue  # answers changed since a ranking was given: nothing to trust
        for pair in _candidate_pairs(votes, with_undecided=posterior is not None):
            crowd = _crowd_ordered(pair, item.pk, votes, posterior) if posterior else None
            if crowd is None and pair.agreement == 0 and pair.gap == 0:
                continue  # a pair only the crowd model could have decided, and it did not
            if crowd is not None:
                chosen_id, rejected_id, weight = crowd
                agreement = sum(v[chosen_id] < v[rejected_id] for v in votes) / len(votes)
                pair = RankedPair(
                    chosen_id, rejected_id, tie=False, strength=pair.strength or "slight",
                    agreement=agreement, gap=pair.gap,
                )  # fmt: skip
            else:
                weight = pair.agreement
            if pair.tie and not include_ties:
                continue
            chosen, rejected = text_of[pair.chosen], text_of[pair.rejected]
            if chosen.strip() == rejected.strip():
                continue
            yield ResolvedPair(
                comparison_id=item.pk,
                prompt_id=item.prompt_id,
                round_id=item.round_id,
                prompt=prompt_messages(item.prompt),
                chosen=chosen,
                rejected=rejected,
                label=Outcome.TIE if pair.tie else Outcome.A,
                agreement=pair.agreement,
                weight=weight,  # the agreement, or the crowd model's posterior
                judgments=len(given),
                strength=pair.strength,
                annotator_ids=tuple(r.annotator_id for r in given),
                selection={
                    **item.selection,
                    "feedback": "ranking",
                    "chosen_response": pair.chosen,
                    "rejected_response": pair.rejected,
                    "consensus_gap": pair.gap,
                },
            )
