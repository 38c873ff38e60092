"""The closed loop: a round's judgments become a promoted policy without hand work.

    round open ──generate──► comparisons ──judging──► quota reached (or an admin closes it)
        ▲                                                   │
        │                                                   ▼
    promote (auto, or an admin) ◄── evaluate + gates ◄── policy (DPO/PPO/RLOO) ◄── reward model

Each arrow on the right is a TrainingRun with `chained=True`; when one succeeds, the worker that
ran it queues the next (`chain_continue`). A failed step stops the chain where it is: retrying
that run resumes it and the chain goes on. The database rows, not Celery, hold the state, so a
killed worker loses nothing but the step it was running.

Held-out prompts: a fixed share of each project's prompts (by a hash of the prompt id, so the
split never changes as prompts are added) is never trained on. Their human comparisons measure
the reward model and the candidate policy; their text is what the gates' win rate is sampled on.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.db import transaction

from annotate import queue as annotate_queue
from annotate.models import (
    ComparisonStatus,
    FeedbackKind,
    Project,
    Prompt,
    Rating,
    ReviewStatus,
    Round,
    RoundStatus,
    TrainingAlgorithm,
)
from annotate.quality import wilson_interval
from annotate.services import annotators_pause_unreliable, round_close, round_open
from config.errors import ConflictError
from config.users import User
from registry.models import ModelKind, ModelVersion, VersionStatus
from registry.services import version_promote
from training.engine import metric_names as metric
from training.models import RunKind, TrainingRun
from training.project_settings import training_settings_of
from training.services import training_run_create

# A project's training_algorithm is the kind of its policy runs (tested to be run kinds).
POLICY_RUN_KINDS = tuple(TrainingAlgorithm.values)


# --- the held-out split ---------------------------------------------------------------------


def prompt_is_heldout(prompt_id: int, fraction: float) -> bool:
    """A stable pseudo-random split: the same prompt is held out in every round, forever."""
    digest = hashlib.blake2b(f"heldout:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def prompts_in_split(project: Project, fraction: float, *, heldout: bool) -> list[Prompt]:
    """The project's held-out prompts (heldout=True) or the ones training may use."""
    prompts = Prompt.objects.filter(project=project).order_by("id")
    return [p for p in prompts if prompt_is_heldout(p.pk, fraction) == heldout]


# --- rounds ---------------------------------------------------------------------------------


@transaction.atomic
def round_start(*, project: Project, actor: User | None = None) -> tuple[Round, TrainingRun]:
    """Open the next round and queue its generation by the active policy."""
    round_ = round_open(project=project)
    run = training_run_create(
        project=project, kind=RunKind.GENERATE, round=round_, created_by=actor
    )
    return round_, run


@transaction.atomic
def round_finish(*, round: Round, actor: User | None = None) -> TrainingRun | None:
    """Close the round by hand and queue its training chain (None: nothing judged to train on)."""
    round_close(round=round, closed_by=actor)
    return round_training_start(round=round, actor=actor)


def round_training_start(*, round: Round, actor: User | None = None) -> TrainingRun | None:
    """The first link of the chain: SFT where there are new accepted demonstrations, else the
    reward model on every resolved pair so far; None when there is nothing to train on."""
    project = round.project
    if new_demonstrations_exist(project):
        kind = RunKind.SFT
    elif pairs_resolved_exist(project):
        kind = RunKind.REWARD
    elif ratings_train_the_policy(project):
        kind = RunKind.KTO  # no pairs for a reward model: straight to the policy step
    else:
        return None
    return training_run_create(
        project=project, kind=kind, round=round, created_by=actor, chained=True
    )


def pairs_resolved_exist(project: Project) -> bool:
    return project.comparisons.filter(
        kind=FeedbackKind.PAIRWISE, status=ComparisonStatus.COMPLETE
    ).exists()


def ratings_train_the_policy(project: Project) -> bool:
    """A KTO project with rated answers can train its policy without any pair."""
    return (
        project.training_algorithm == TrainingAlgorithm.KTO
        and Rating.objects.filter(comparison__project=project).exists()
    )


def demonstrations_trained(project: Project) -> set[int]:
    """Demonstrations an SFT version of the project has already trained on."""
    trained: set[int] = set()
    sft_versions = ModelVersion.objects.filter(
        project=project, kind=ModelKind.POLICY, training_data__has_key="demonstrations"
    )
    for data in sft_versions.values_list("training_data", flat=True):
        trained.update(data.get("demonstrations", []))
    return trained


def new_demonstrations_exist(project: Project) -> bool:
    """Whether an accepted demonstration waits that no SFT version has trained on."""
    accepted = project.demonstrations.filter(review_status=ReviewStatus.ACCEPTED)
    return accepted.exclude(pk__in=list(demonstrations_trained(project))).exists()


def _pairs_short(progress: annotate_queue.RoundProgress) -> int:
    """Pairs still to complete before the quota (or every pair of the round) is reached."""
    return min(progress.quota, progress.pairs) - progress.complete


def _quota_reached(progress: annotate_queue.RoundProgress) -> bool:
    """Complete pairs reached the quota, or every pair of the round is complete."""
    return progress.pairs > 0 and _pairs_short(progress) <= 0


# Counting a round's pairs costs in proportion to its size, and under load pairs complete many
# times a second. A round that this process counted within the last QUOTA_RECOUNT_SECONDS and
# found more than QUOTA_RECOUNT_MARGIN pairs short of its quota cannot have reached it since
# (that would take thousands of judgments a second), so it is not counted again yet. Rounds near
# their quota are counted after every completed pair; beat's check is the safety net.
QUOTA_RECOUNT_SECONDS = 0.25
QUOTA_RECOUNT_MARGIN = 250
_last_count: dict[int, tuple[float, int]] = {}  # round id -> (monotonic time, pairs short)


def _recently_far_from_quota(round_id: int) -> bool:
    counted = _last_count.get(round_id)
    if counted is None:
        return False
    counted_at, short = counted
    return time.monotonic() - counted_at < QUOTA_RECOUNT_SECONDS and short > QUOTA_RECOUNT_MARGIN


def round_close_if_complete(*, round_id: int, after_submit: bool = False) -> TrainingRun | None:
    """The quota trigger: close the round and start training once enough pairs are complete.

    Called after each submit that completes a pair (after_submit) and by beat; many callers may
    race, and the conditional update inside round_close lets exactly one of them close it and
    start the chain.
    """
    if after_submit and _recently_far_from_quota(round_id):
        return None
    progress = annotate_queue.open_round_progress(round_id)
    if progress is None:
        _last_count.pop(round_id, None)  # closed: never counted again
    else:
        _last_count[round_id] = (time.monotonic(), _pairs_short(progress))
    if progress is None or not _quota_reached(progress):
        return None
    round_ = Round.objects.filter(pk=round_id, status=RoundStatus.OPEN).first()
    if round_ is None:
        return None
    try:
        with transaction.atomic():
            round_close(round=round_)
            return round_training_start(round=round_)
    except ConflictError:
        return None  # another caller closed it first


def round_check_quota_after_submit(round_id: int) -> None:
    """annotate's pair-completed hook: a submit completed one of this round's pairs."""
    round_close_if_complete(round_id=round_id, after_submit=True)


def rounds_check_triggers() -> list[int]:
    """Beat's safety net for the quota trigger; returns the ids of rounds it closed."""
    closed = []
    for round_id in Round.objects.filter(status=RoundStatus.OPEN).values_list("pk", flat=True):
        if round_close_if_complete(round_id=round_id) is not None:
            closed.append(round_id)
    return closed


def annotators_auto_pause() -> dict[int, list[int]]:
    """Beat: in each project that sets `auto_pause_below`, pause the annotators the crowd model
    puts below it; returns the paused user ids by project id."""
    paused: dict[int, list[int]] = {}
    for project in Project.objects.filter(training_settings__has_key="auto_pause_below"):
        below = training_settings_of(project).auto_pause_below
        if below is not None and (ids := annotators_pause_unreliable(project=project, below=below)):
            paused[project.pk] = ids
    return paused


# --- the chain ------------------------------------------------------------------------------


def chain_continue(run: TrainingRun) -> TrainingRun | None:
    """After a chained run succeeded: queue the next step, or finish the round."""
    if not run.chained:
        return None
    if run.kind == RunKind.SFT:
        # Pairs train the reward model and a policy step from the SFT adapter; without pairs,
        # the SFT version is the round's candidate.
        if pairs_resolved_exist(run.project):
            return training_run_create(
                project=run.project, kind=RunKind.REWARD, round=run.round, chained=True
            )
        if ratings_train_the_policy(run.project):
            return training_run_create(
                project=run.project, kind=RunKind.KTO, round=run.round, chained=True
            )
        return training_run_create(
            project=run.project,
            kind=RunKind.EVALUATE,
            round=run.round,
            chained=True,
            input_version=run.output_version,
        )
    if run.kind == RunKind.REWARD:
        reward = run.output_version
        if reward is not None and reward.status != VersionStatus.ACTIVE:
            version_promote(version=reward, reason=f"trained on round {_round_number(run)}")
        return training_run_create(
            project=run.project,
            kind=run.project.training_algorithm,
            round=run.round,
            chained=True,
            input_version=reward,
        )
    if run.kind in POLICY_RUN_KINDS:
        return training_run_create(
            project=run.project,
            kind=RunKind.EVALUATE,
            round=run.round,
            chained=True,
            input_version=run.output_version,
        )
    if run.kind == RunKind.EVALUATE and run.input_version is not None:
        candidate_finish(candidate=run.input_version, round=run.round)
    return None


def candidate_finish(*, candidate: ModelVersion, round: Round | None) -> bool:
    """The round is trained; an auto-promote project serves a passing candidate at once and
    opens the next round with it. Returns whether the candidate was promoted."""
    with transaction.atomic():
        if round is not None:
            Round.objects.filter(pk=round.pk, status=RoundStatus.CLOSED).update(
                status=RoundStatus.TRAINED
            )
        project = candidate.project
        if not (project.auto_promote and gates_passed(candidate)):
            return False
        version_promote(version=candidate, reason="automatic: every gate passed")
        if not project.rounds.filter(status=RoundStatus.OPEN).exists():
            round_start(project=project)
    return True


def gates_passed(version: ModelVersion) -> bool:
    return bool(version.gate_results.get("passed"))


# Gates on a share, and the summary figure that counts what the share is of.
SHARE_GATES = {metric.WIN_RATE: metric.PROMPTS, metric.HELDOUT_ACCURACY: metric.HELDOUT_PAIRS}


def gates_check(*, project: Project, summary: dict[str, Any]) -> dict[str, Any]:
    """Compare an evaluation with the project's thresholds; a gate without a value fails,
    except held-out accuracy before any held-out pair was judged (nothing to hold against)."""
    win_rate, kl = summary[metric.WIN_RATE], summary[metric.KL]
    accuracy = summary[metric.HELDOUT_ACCURACY]
    gates = {
        metric.WIN_RATE: _gate(win_rate, project.gate_min_win_rate, "min"),
        metric.KL: _gate(kl, project.gate_max_kl, "max"),
        metric.HELDOUT_ACCURACY: _gate(accuracy, project.gate_min_heldout_accuracy, "min"),
    }
    # Shares come with their sample size and a 95% Wilson interval; an interval that
    # straddles the threshold is marked inconclusive (shown beside the verdict).
    for name, count_key in SHARE_GATES.items():
        count = summary.get(count_key)
        if gates[name]["value"] is not None and count:
            gates[name].update(_interval(gates[name], int(count)))
    if win_rate is None:
        gates[metric.WIN_RATE]["note"] = "no reward model to judge with"
    if accuracy is None:
        gates[metric.HELDOUT_ACCURACY].update(
            passed=True, note="no held-out human pairs judged yet"
        )
    return {"passed": all(g["passed"] for g in gates.values()), "gates": gates}


def _interval(gate: dict[str, Any], count: int) -> dict[str, Any]:
    low, high = wilson_interval(float(gate["value"]), count)
    threshold = gate["threshold"]
    return {"n": count, "low": low, "high": high, "conclusive": not low < threshold < high}


def _gate(value: float | None, threshold: float, kind: str) -> dict[str, Any]:
    passed = value is not None and (value >= threshold if kind == "min" else value <= threshold)
    return {"value": value, "threshold": threshold, "kind": kind, "passed": passed}


def _round_number(run: TrainingRun) -> str:
    return str(run.round.number) if run.round is not None else "?"
