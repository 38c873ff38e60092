"""Which two of a prompt's answers annotators compare, and in what order pairs are served.

`random`: two distinct answers drawn at random (with the default two answers a prompt, simply
those two). The other strategies have the round write k answers a prompt and the active reward
model score every one:
- `uncertainty`: each prompt's pair is the two answers whose rewards are closest (the comparison
  the reward model finds closest, P(a better) = sigmoid(r_a - r_b) nearest one half), served
  most uncertain first (priority = the binary entropy of that probability). Its doubt is the
  margin of one model: it also chases pairs the people themselves find close, where a label
  teaches little.
- `disagreement`: the reward model carries bootstrap heads (engine.ensemble); each prompt's pair
  is the one whose label says most about them (BALD's expected information in bits: high where
  the heads split, near zero where all call it a coin flip), served most informative first.
  A reward model trained before the setting has no heads: its pairs fall back to `uncertainty`,
  and say so.
- `information`: the reward model carries its head's Laplace posterior (engine.ensemble.
  HeadPosterior: the whole doubt of the head in closed form, not K samples of it). The round's
  pairs are chosen one at a time, across prompts, one a prompt, each the pair whose label would
  most reduce the doubt about the margins of the round's other pairs (weighted by how undecided
  each is) given the labels of those chosen before it (engine.ensemble.informative_order), and
  served in that order. Without a posterior it falls back to `uncertainty`, and says so.
Held-out prompts and a `random_share` of the others keep random pairs, served interleaved with
the rest, so the held-out accuracy and any later analysis rest on an unbiased sample.

Every comparison stores its choice: strategy, why, k, every answer's score (and under
`disagreement` each head's; under `information` the pick's place in the order, its value and
information, the posterior margin and its spread), the reward version. The choice is pure
(`choose_pairs`); `plan_round_pairs` reads the round and scores it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from annotate.models import FeedbackKind, Prompt, Response, Round
from annotate.services import PlannedPair
from training.project_settings import PairingSettings

if TYPE_CHECKING:  # the engine pulls in torch, which the web process need not load
    from training.engine.ensemble import AnswerPosterior

PromptValue = str | list[dict[str, str]]


class Scorer(Protocol):
    """A reward model scoring a batch of (prompt as text or chat messages, answer)."""

    def __call__(self, prompts: Sequence[PromptValue], answers: Sequence[str]) -> list[float]: ...

    def with_heads(
        self, prompts: Sequence[PromptValue], answers: Sequence[str]
    ) -> tuple[list[float], list[list[float]]]:
        """The rewards and each answer's bootstrap-head scores (empty lists: no heads)."""

    def with_posterior(
        self, prompts: Sequence[PromptValue], answers: Sequence[str]
    ) -> tuple[list[float], AnswerPosterior | None]:
        """The rewards and every answer under the head's posterior (None: no posterior)."""


@dataclass(frozen=True)
class Answer:
    response_id: int
    text: str


@dataclass(frozen=True)
class PosteriorOfAnswers:
    """Answers under the reward head's posterior; row i of `answers` is `response_ids[i]`."""

    response_ids: Sequence[int]
    answers: AnswerPosterior

    def row_of(self) -> dict[int, int]:
        return {response_id: row for row, response_id in enumerate(self.response_ids)}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(min(x, 50.0), -50.0)))


def binary_entropy(p: float) -> float:
    """In bits: 1 at p = 0.5, 0 at certainty."""
    if p <= 0 or p >= 1:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def distinct_answers(answers: Sequence[Answer]) -> list[Answer]:
    """One answer per text (after trimming), first kept: two equal texts teach nothing."""
    seen: set[str] = set()
    kept = []
    for answer in sorted(answers, key=lambda a: a.response_id):
        if answer.text.strip() not in seen:
            seen.add(answer.text.strip())
            kept.append(answer)
    return kept


def _ordered(first: Answer, second: Answer) -> tuple[Answer, Answer]:
    return (first, second) if first.response_id < second.response_id else (second, first)


def _least_certain(answers: Sequence[Answer], scores: Mapping[int, float]) -> tuple[Answer, Answer]:
    """The two answers with the closest rewards (ties broken by answer order)."""
    return min(
        itertools.combinations(answers, 2),
        key=lambda pair: abs(scores[pair[0].response_id] - scores[pair[1].response_id]),
    )


def expected_information(first: Sequence[float], second: Sequence[float]) -> float:
    """BALD in bits for one pair, from each head's score of both answers: the entropy of the
    heads' mean P(first better) minus the mean of each head's entropy."""
    p = [_sigmoid(a - b) for a, b in zip(first, second, strict=True)]
    mean_entropy = sum(binary_entropy(q) for q in p) / len(p)
    return max(0.0, binary_entropy(sum(p) / len(p)) - mean_entropy)


def _most_informative(
    answers: Sequence[Answer], heads: Mapping[int, Sequence[float]]
) -> tuple[Answer, Answer]:
    """The two answers whose comparison the heads split on most (ties broken by order)."""
    return max(
        itertools.combinations(answers, 2),
        key=lambda pair: expected_information(
            heads[pair[0].response_id], heads[pair[1].response_id]
        ),
    )


def choose_pairs(
    answers_by_prompt: Mapping[int, Sequence[Answer]],
    *,
    settings: PairingSettings,
    scores: Mapping[int, float] | None,
    reward_version: int | None,
    heldout: set[int],
    seed: int,
    head_scores: Mapping[int, Sequence[float]] | None = None,
    posterior: PosteriorOfAnswers | None = None,
) -> list[PlannedPair]:
    """One planned pair per prompt with two distinct answers; see the module docstring.

    `scores` (response id to reward) None means there is no reward model yet: every pair is
    random, and says so. `head_scores` (response id to each head's score) is read under
    `disagreement`, `posterior` under `information`; without them those pairs are chosen by
    `uncertainty`.
    """
    rng = random.Random(seed)
    by_heads = settings.strategy == "disagreement" and bool(head_scores)
    by_posterior = settings.strategy == "information" and posterior is not None
    chosen: list[tuple[int, Answer, Answer, dict]] = []
    informative: dict[int, list[Answer]] = {}  # prompts whose pair the posterior chooses
    for prompt_id in sorted(answers_by_prompt):
        answers = distinct_answers(answers_by_prompt[prompt_id])
        if len(answers) < 2:
            continue
        why = _random_reason(settings, scores, prompt_id in heldout, rng)
        if why is None and by_posterior:
            informative[prompt_id] = answers  # chosen together below, each given the others
            continue
        if why is None and by_heads:
            assert head_scores is not None
            a, b = _ordered(*_most_informative(answers, head_scores))
            strategy = "disagreement"
        elif why is None:
            assert scores is not None
            a, b = _ordered(*_least_certain(answers, scores))
            strategy = "uncertainty"
            if settings.strategy == "disagreement":
                why = "the reward model has no bootstrap heads: closest rewards instead"
            elif settings.strategy == "information":
                why = "the reward model has no head posterior: closest rewards instead"
        else:
            a, b = _ordered(*rng.sample(answers, 2))
            strategy = "random"
        selection: dict = {"strategy": strategy, "pairing": settings.strategy, "k": len(answers)}
        if why:
            selection["why"] = why
        if scores is not None:
            selection |= {"reward_version": reward_version} | _reward_margin(a, b, answers, scores)
        if by_heads:
            assert head_scores is not None
            selection |= {
                "head_scores": {
                    str(answer.response_id): list(head_scores[answer.response_id])
                    for answer in answers
                },
                "information": expected_information(
                    head_scores[a.response_id], head_scores[b.response_id]
                ),
            }
        chosen.append((prompt_id, a, b, selection))
    if informative:
        assert posterior is not None and scores is not None
        for prompt_id, a, b, selection in _informative_pairs(informative, posterior):
            selection |= {"pairing": settings.strategy, "reward_version": reward_version}
            selection |= _reward_margin(a, b, informative[prompt_id], scores)
            chosen.append((prompt_id, a, b, selection))
    return _with_priorities(chosen, rng)


def _reward_margin(
    a: Answer, b: Answer, answers: Sequence[Answer], scores: Mapping[int, float]
) -> dict:
    margin = scores[a.response_id] - scores[b.response_id]
    return {
        "scores": {str(answer.response_id): scores[answer.response_id] for answer in answers},
        "margin": margin,
        "p_a": _sigmoid(margin),
    }


def _informative_pairs(
    answers_by_prompt: Mapping[int, Sequence[Answer]], posterior: PosteriorOfAnswers
) -> list[tuple[int, Answer, Answer, dict]]:
    """One pair a prompt, in the order engine.ensemble.informative_order picks them across all
    the prompts' candidate pairs, with what the posterior said of each."""
    import torch

    from training.engine.ensemble import informative_order

    row = posterior.row_of()
    candidates = [
        (prompt_id, *_ordered(first, second))
        for prompt_id, answers in answers_by_prompt.items()
        for first, second in itertools.combinations(answers, 2)
    ]
    rows = torch.tensor([[row[a.response_id], row[b.response_id]] for _, a, b in candidates])
    order = informative_order(
        posterior.answers, rows, [prompt_id for prompt_id, *_ in candidates], len(answers_by_prompt)
    )
    mean, whitened = posterior.answers.mean, posterior.answers.whitened
    out = []
    for place, pick in enumerate(order):
        prompt_id, a, b = candidates[pick.index]
        first, second = rows[pick.index]
        selection = {
            "strategy": "information",
            "k": len(answers_by_prompt[prompt_id]),
            "pick": place + 1,
            "of": len(order),
            "value": pick.value,  # doubt its label removes from the round's margins
            "information": pick.information,  # bits, given the pairs picked before it
            "posterior_margin": float(mean[first] - mean[second]),
            "posterior_sd": float((whitened[first] - whitened[second]).norm()),  # before the round
        }
        out.append((prompt_id, a, b, selection))
    return out


def _random_reason(
    settings: PairingSettings, scores: Mapping[int, float] | None, heldout: bool, rng: random.Random
) -> str | None:
    """Why this prompt's pair is random, or None when the reward model chooses it."""
    if settings.strategy == "random":
        return ""
    if scores is None:
        return "no reward model yet"
    if heldout:
        return "held-out prompt (unbiased evaluation)"
    if rng.random() < settings.random_share:
        return "random share (unbiased sample)"
    return None


def _priority_of(selection: dict) -> float | None:
    """How soon a chosen pair is served (higher first); None for a random one."""
    if selection["strategy"] == "information":  # in the order picked: 1 first, down to 1 / n
        return 1 - (selection["pick"] - 1) / selection["of"]
    if selection["strategy"] == "disagreement":
        return float(selection["information"])
    if selection["strategy"] == "uncertainty":
        return binary_entropy(selection["p_a"])
    return None


def _with_priorities(
    chosen: list[tuple[int, Answer, Answer, dict]], rng: random.Random
) -> list[PlannedPair]:
    """Chosen pairs by their priority; random pairs drawn from those same priorities, so they
    are served interleaved with the chosen ones, not all first or last."""
    known = [p for *_, selection in chosen if (p := _priority_of(selection)) is not None]
    planned = []
    for prompt_id, a, b, selection in chosen:
        priority = _priority_of(selection)
        if priority is None:
            priority = rng.choice(known) if known else 0.0
        planned.append(
            PlannedPair(
                prompt_id=prompt_id,
                response_a_id=a.response_id,
                response_b_id=b.response_id,
                priority=priority,
                selection=selection,
            )
        )
    return planned


def plan_round_pairs(
    round_: Round,
    *,
    settings: PairingSettings,
    scorer: Scorer | None,
    reward_version: int | None,
    is_heldout: Callable[[int], bool],
) -> list[PlannedPair]:
    """The round's answers by its policy, scored when the strategy needs it, then chosen."""
    responses = Response.objects.filter(round=round_, model_version=round_.policy).only(
        "id", "prompt_id", "text"
    )
    answers_by_prompt: dict[int, list[Answer]] = {}
    for response in responses.order_by("id"):
        answers_by_prompt.setdefault(response.prompt_id, []).append(
            Answer(response.pk, response.text)
        )
    scores, head_scores, posterior = None, None, None
    if settings.chooses and scorer is not None:
        prompts = Prompt.objects.in_bulk(list(answers_by_prompt))
        flat = [(prompt_id, a) for prompt_id, many in answers_by_prompt.items() for a in many]
        texts = [prompts[prompt_id].messages or prompts[prompt_id].text for prompt_id, _ in flat]
        answers = [answer.text for _, answer in flat]
        if settings.strategy == "disagreement":
            values, heads = scorer.with_heads(texts, answers)
            if all(heads):
                head_scores = {a.response_id: h for (_, a), h in zip(flat, heads, strict=True)}
        elif settings.strategy == "information":
            values, under_posterior = scorer.with_posterior(texts, answers)
            if under_posterior is not None:
                posterior = PosteriorOfAnswers([a.response_id for _, a in flat], under_posterior)
        else:
            values = scorer(texts, answers)
        scores = {answer.response_id: float(v) for (_, answer), v in zip(flat, values, strict=True)}
    return choose_pairs(
        answers_by_prompt,
        settings=settings,
        scores=scores,
        reward_version=reward_version,
        heldout={prompt_id for prompt_id in answers_by_prompt if is_heldout(prompt_id)},
        seed=round_.pk,
        head_scores=head_scores,
        posterior=posterior,
    )


def feedback_kinds_of_prompts(
    prompt_ids: Sequence[int],
    *,
    round_number: int,
    shares: Mapping[str, float],
    is_heldout: Callable[[int], bool],
) -> dict[int, str]:
    """The feedback kind each of a round's prompts asks for, where it is not a choice between
    two answers: about `shares[kind]` of the prompts not held out each (the held-out ones stay
    pairs, which the gates measure on). A hash of the round and the prompt draws a number in
    [0, 1) laid against the shares end to end, so a retried generation draws the same."""
    kinds: dict[int, str] = {}
    if sum(shares.values()) <= 0:
        return kinds
    for prompt_id in prompt_ids:
        if is_heldout(prompt_id):
            continue
        digest = hashlib.sha256(f"feedback:{round_number}:{prompt_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        for kind, share in shares.items():
            if draw < share:
                kinds[prompt_id] = kind
                break
            draw -= share
    return kinds


def demonstration_prompts(
    prompt_ids: Sequence[int],
    *,
    round_number: int,
    share: float,
    is_heldout: Callable[[int], bool],
) -> set[int]:
    """The round's prompts whose item asks for a written answer (feedback_kinds_of_prompts)."""
    kinds = feedback_kinds_of_prompts(
        prompt_ids,
        round_number=round_number,
        shares={FeedbackKind.DEMONSTRATION: share},
        is_heldout=is_heldout,
    )
    return set(kinds)
