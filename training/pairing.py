"""Which two of a prompt's answers annotators compare, and in what order pairs are served.

`random`: two distinct answers drawn at random (with the default two answers a prompt, simply
those two). `uncertainty`: the round writes k answers a prompt; the active reward model scores
every one; each prompt's pair is the two answers whose rewards are closest (the comparison the
reward model is least sure of, P(a better) = sigmoid(r_a - r_b) nearest one half), and pairs
are served most uncertain first (priority = the binary entropy of that probability). Held-out
prompts and a `random_share` of the others keep random pairs, served interleaved with the rest,
so the held-out accuracy and any later analysis rest on an unbiased sample.

The doubt measured is the reward margin of one reward model: no ensemble, no DPO implicit
reward (that needs the policy's and the reference's log-probs of k answers, on the worker).

Every comparison stores its choice: strategy, why, k, every answer's score, the reward version.
The choice is pure (`choose_pairs`); `plan_round_pairs` reads the round and scores it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from annotate.models import FeedbackKind, Prompt, Response, Round
from annotate.services import PlannedPair
from training.project_settings import PairingSettings

# Scores a batch of (prompt as text or chat messages, answer) with a reward model.
Scorer = Callable[[Sequence[str | list[dict[str, str]]], Sequence[str]], list[float]]


@dataclass(frozen=True)
class Answer:
    response_id: int
    text: str


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


def choose_pairs(
    answers_by_prompt: Mapping[int, Sequence[Answer]],
    *,
    settings: PairingSettings,
    scores: Mapping[int, float] | None,
    reward_version: int | None,
    heldout: set[int],
    seed: int,
) -> list[PlannedPair]:
    """One planned pair per prompt with two distinct answers; see the module docstring.

    `scores` (response id to reward) None means there is no reward model yet: every pair is
    random, and says so.
    """
    rng = random.Random(seed)
    chosen: list[tuple[int, Answer, Answer, dict]] = []
    for prompt_id in sorted(answers_by_prompt):
        answers = distinct_answers(answers_by_prompt[prompt_id])
        if len(answers) < 2:
            continue
        why = _random_reason(settings, scores, prompt_id in heldout, rng)
        if why is None:
            assert scores is not None
            a, b = _ordered(*_least_certain(answers, scores))
            strategy = "uncertainty"
        else:
            a, b = _ordered(*rng.sample(answers, 2))
            strategy = "random"
        selection: dict = {"strategy": strategy, "pairing": settings.strategy, "k": len(answers)}
        if why:
            selection["why"] = why
        if scores is not None:
            margin = scores[a.response_id] - scores[b.response_id]
            selection |= {
                "scores": {
                    str(answer.response_id): scores[answer.response_id] for answer in answers
                },
                "reward_version": reward_version,
                "margin": margin,
                "p_a": _sigmoid(margin),
            }
        chosen.append((prompt_id, a, b, selection))
    return _with_priorities(chosen, rng)


def _random_reason(
    settings: PairingSettings, scores: Mapping[int, float] | None, heldout: bool, rng: random.Random
) -> str | None:
    """Why this prompt's pair is random, or None when it is chosen by uncertainty."""
    if settings.strategy == "random":
        return ""
    if scores is None:
        return "no reward model yet"
    if heldout:
        return "held-out prompt (unbiased evaluation)"
    if rng.random() < settings.random_share:
        return "random share (unbiased sample)"
    return None


def _with_priorities(
    chosen: list[tuple[int, Answer, Answer, dict]], rng: random.Random
) -> list[PlannedPair]:
    """Uncertain pairs by their entropy; random pairs drawn from those same priorities, so they
    are served interleaved with the uncertain ones, not all first or last."""
    uncertain = [
        binary_entropy(selection["p_a"])
        for *_, selection in chosen
        if selection["strategy"] == "uncertainty"
    ]
    planned = []
    for prompt_id, a, b, selection in chosen:
        if selection["strategy"] == "uncertainty":
            priority = binary_entropy(selection["p_a"])
        else:
            priority = rng.choice(uncertain) if uncertain else 0.0
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
    scores = None
    if settings.strategy == "uncertainty" and scorer is not None:
        prompts = Prompt.objects.in_bulk(list(answers_by_prompt))
        flat = [(prompt_id, a) for prompt_id, many in answers_by_prompt.items() for a in many]
        values = scorer(
            [prompts[prompt_id].messages or prompts[prompt_id].text for prompt_id, _ in flat],
            [answer.text for _, answer in flat],
        )
        scores = {answer.response_id: float(v) for (_, answer), v in zip(flat, values, strict=True)}
    return choose_pairs(
        answers_by_prompt,
        settings=settings,
        scores=scores,
        reward_version=reward_version,
        heldout={prompt_id for prompt_id in answers_by_prompt if is_heldout(prompt_id)},
        seed=round_.pk,
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
