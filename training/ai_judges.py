"""AI judges: annotators backed by a model behind any OpenAI-compatible endpoint.

A judge is shown what a human is shown (the prompt and two answers on random sides, never
which model wrote them), after the project's constitution and its instructions, and answers
with one JSON object. Its judgment is stored under its own account with source "ai" and an
AiJudgment row keeping the constitution's sha256, the model and the raw reply.

By default a judge's judgments sit beside the quota (annotate.services.
judgment_record_uncounted): humans still judge every pair, the label is theirs, and the
statistics show the judge's agreement with them round by round like any annotator's. A judge
that `counts_toward_quota` takes leases and submits as an annotator would.

Pre-judging: after judging, the pairs the judge found hard (a tie or "both bad") or where it
disagrees with the reward model's own preference (selection.p_a, under uncertainty pairing)
rise in priority, so humans see those first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import transaction

from annotate.models import (
    Choice,
    Comparison,
    ComparisonStatus,
    FeedbackKind,
    JudgmentSource,
    MemberRole,
    Project,
    Round,
    RoundStatus,
)
from annotate.services import (
    assignment_lease_next,
    judgment_record_uncounted,
    judgment_submit,
    membership_set,
)
from config.errors import ApplicationError
from config.users import User
from training.engine.config import GenerationConfig
from training.engine.remote import RemoteBackend, RemoteError, RemoteGenerator, api_key_from
from training.models import AiJudge, AiJudgment

logger = logging.getLogger(__name__)

# How much a pair the judge found hard, or disagreed on with the reward model, moves up.
HARD_PAIR_PRIORITY_BOOST = 1.0
VERDICTS = {"a": "a", "b": "b", "tie": "tie", "both_bad": "both_bad", "both bad": "both_bad"}


def constitution_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@transaction.atomic
def ai_judge_create(
    *,
    project: Project,
    name: str,
    base_url: str,
    model: str,
    constitution: str,
    api_key_env: str = "",
    counts_toward_quota: bool = False,
    actor: User | None = None,
) -> AiJudge:
    """A judge and its account (which can never sign in), an annotator of the project."""
    if not constitution.strip():
        raise ApplicationError("constitution must not be empty: write the principles to judge by.")
    if not base_url.startswith(("http://", "https://")):
        raise ApplicationError("base_url must be an http(s) address ending in /v1.")
    username = f"ai-{project.slug}-{name}"
    if User.objects.filter(username=username).exists():
        raise ApplicationError(f"An account named {username!r} exists already; pick another name.")
    user = User.objects.create(username=username, is_active=False)
    user.set_unusable_password()
    user.save(update_fields=["password"])
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR, actor=actor)
    return AiJudge.objects.create(
        project=project,
        user=user,
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        constitution=constitution,
        counts_toward_quota=counts_toward_quota,
    )


@dataclass(frozen=True)
class Verdict:
    outcome: str  # a, b, tie or both_bad, in the terms the judge was shown (A = first)
    reason: str


def parse_verdict(reply: str) -> Verdict:
    """The judge's JSON answer, or a bare A / B / tie / both_bad at the start of its reply."""
    found = re.search(r"\{.*\}", reply, flags=re.DOTALL)
    if found:
        try:
            data = json.loads(found.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            better = str(data.get("better", "")).strip().lower()
            if better in VERDICTS:
                return Verdict(VERDICTS[better], str(data.get("reason", ""))[:2000])
    first = re.match(r"\s*(both[ _]bad|tie|a|b)\b", reply, flags=re.IGNORECASE)
    if first:
        return Verdict(VERDICTS[first.group(1).lower().replace("_", " ").replace(" ", "_")], "")
    raise ApplicationError(f"The judge's reply names no verdict: {reply[:200]!r}")


def judge_messages(judge: AiJudge, prompt: str, first: str, second: str) -> list[dict[str, str]]:
    system = f"{judge.constitution.strip()}\n\n{judge.instructions.strip()}"
    user = (
        f"Prompt:\n{prompt}\n\n--- Answer A ---\n{first}\n\n--- Answer B ---\n{second}\n\n"
        "Which answer is better by the principles?"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _prompt_text(comparison: Comparison) -> str:
    prompt = comparison.prompt
    if prompt.messages:
        return "\n".join(f"{turn['role']}: {turn['content']}" for turn in prompt.messages)
    return prompt.text


def _choice(shown: str) -> str:
    """The verdict (A = the answer shown first, on the left) as a screen choice."""
    return {"a": Choice.LEFT, "b": Choice.RIGHT}.get(shown, shown)


@dataclass(frozen=True)
class PairToJudge:
    comparison: Comparison
    a_on_left: bool
    assignment_id: int | None  # the lease, for a judge that counts toward the quota


def _pairs_to_judge(judge: AiJudge, limit: int, draw: random.Random) -> Iterator[PairToJudge]:
    """The open round's open pairs the judge has not judged, highest priority first: through
    the queue's leases for a judge that counts toward the quota, else read directly."""
    if judge.counts_toward_quota:
        for _ in range(limit):
            lease = assignment_lease_next(project=judge.project, annotator=judge.user)
            if lease is None:
                return
            yield PairToJudge(lease.comparison, lease.a_on_left, lease.pk)
        return
    open_round = Round.objects.filter(project=judge.project, status=RoundStatus.OPEN).first()
    if open_round is None:
        return
    pairs = (
        Comparison.objects.filter(
            round=open_round, kind=FeedbackKind.PAIRWISE, status=ComparisonStatus.OPEN
        )
        .exclude(judgments__annotator=judge.user)
        .select_related("prompt", "response_a", "response_b")
        .order_by("-priority", "id")[:limit]
    )
    for comparison in pairs:
        yield PairToJudge(comparison, draw.random() < 0.5, None)


def _disagrees_with_reward_model(comparison: Comparison, outcome: str) -> bool:
    p_a = comparison.selection.get("p_a") if comparison.selection else None
    if not isinstance(p_a, int | float) or outcome not in ("a", "b"):
        return False
    return (p_a > 0.5) != (outcome == "a")


def ai_judge_run(*, judge_id: int, limit: int = 20, seed: int = 0) -> int:
    """Judge up to `limit` open pairs of the project's open round; the number judged."""
    judge = AiJudge.objects.select_related("project", "user").get(pk=judge_id)
    if not judge.enabled:
        return 0
    backend = RemoteBackend(
        base_url=judge.base_url, api_key=api_key_from(judge.api_key_env), concurrency=1
    )
    client = RemoteGenerator(backend)
    config = GenerationConfig(max_new_tokens=256, temperature=0.0, samples_per_prompt=1)
    digest = constitution_sha256(judge.constitution)
    draw = random.Random(seed)
    judged = 0
    try:
        for pair in _pairs_to_judge(judge, limit, draw):
            comparison = pair.comparison
            a, b = comparison.response_a.text, comparison.response_b.text
            first, second = (a, b) if pair.a_on_left else (b, a)
            messages = judge_messages(judge, _prompt_text(comparison), first, second)
            try:
                answers = client.generate(judge.model, [messages], config)
            except RemoteError as error:
                logger.warning("AI judge %s: %s", judge.pk, error)
                break  # the endpoint is down: the leases expire, the next run tries again
            reply = answers[0][0].text if answers and answers[0] else ""
            try:
                verdict = parse_verdict(reply)
            except ApplicationError:
                logger.warning("AI judge %s gave no verdict on pair %s", judge.pk, comparison.pk)
                continue
            _store(judge, pair, verdict, reply, digest)
            outcome = _in_pair_terms(verdict.outcome, pair.a_on_left)
            if outcome in ("tie", "both_bad") or _disagrees_with_reward_model(comparison, outcome):
                Comparison.objects.filter(pk=comparison.pk).update(
                    priority=comparison.priority + HARD_PAIR_PRIORITY_BOOST
                )
            judged += 1
    finally:
        client.close()
    return judged


def _in_pair_terms(shown: str, a_on_left: bool) -> str:
    """A verdict about what was shown (A first) in the comparison's own a / b terms."""
    if shown in ("tie", "both_bad") or a_on_left:
        return shown
    return {"a": "b", "b": "a"}[shown]


def _store(judge: AiJudge, pair: PairToJudge, verdict: Verdict, reply: str, digest: str) -> None:
    with transaction.atomic():
        if pair.assignment_id is not None:
            judgment = judgment_submit(
                assignment_id=pair.assignment_id,
                annotator=judge.user,
                choice=_choice(verdict.outcome),
                rationale=verdict.reason,
                source=JudgmentSource.AI,
            ).judgment
        else:
            judgment = judgment_record_uncounted(
                comparison=pair.comparison,
                annotator=judge.user,
                choice=_choice(verdict.outcome),
                a_on_left=pair.a_on_left,
                rationale=verdict.reason,
            )
        AiJudgment.objects.get_or_create(
            judgment=judgment,
            defaults={
                "judge": judge,
                "constitution_sha256": digest,
                "model": judge.model,
                "reply": reply[:20_000],
            },
        )
