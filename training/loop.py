"""Headless rounds: generate, judge with simulated annotators, train, evaluate, promote.

`run_loop` drives the same services and chain a deployment uses; it only stands in for the
people. Runs the chain queues are executed in this process, unless a worker (say, the one
`make demo` starts) claims them first; then this waits for that worker. Either way each run is
claimed exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db.models import Q

from annotate.models import Project, Round, RoundStatus
from registry.models import ModelVersion, VersionStatus
from registry.services import version_promote
from training.engine import metric_names as metric
from training.models import RunKind, RunStatus
from training.pipeline import POLICY_RUN_KINDS, gates_passed, round_finish, round_start
from training.runner import training_run_execute
from training.services import training_run_create
from training.simulation import Oracle, simulate_judging
from training.version_metrics import reward_accuracy

Log = Callable[[str], None]
POLL_SECONDS = 2.0


@dataclass
class RoundReport:
    round: int
    written_by: int  # the policy version whose answers were compared
    comparisons: int = 0
    judgments: int = 0
    reward_accuracy: float | None = None  # the round's reward model on held-out human pairs
    candidate: int | None = None
    reward_win_rate: float | None = None
    oracle_win_rate: float | None = None  # candidate against its parent, by the oracle
    kl: float | None = None
    heldout_accuracy: float | None = None
    gates_passed: bool = False
    promoted: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""


def run_rounds(
    *,
    project: Project,
    rounds: int,
    oracle: Oracle,
    noise: float = 0.0,
    annotators: int | None = None,
    promote: bool = True,
    seed: int = 0,
    log: Log = lambda message: None,
) -> list[RoundReport]:
    reports = []
    for index in range(rounds):
        report = run_one_round(
            project=project,
            oracle=oracle,
            noise=noise,
            annotators=annotators,
            promote=promote,
            seed=seed + index,
            log=log,
        )
        reports.append(report)
        if report.error:
            log(f"round {report.round} stopped: {report.error}")
            break
    return reports


def run_one_round(
    *,
    project: Project,
    oracle: Oracle,
    noise: float,
    annotators: int | None,
    promote: bool,
    seed: int,
    log: Log,
) -> RoundReport:
    started = time.perf_counter()
    round_ = project.rounds.filter(status=RoundStatus.OPEN).first()
    if round_ is None:
        round_, _ = round_start(project=project)
    report = RoundReport(round=round_.number, written_by=round_.policy.number)
    log(f"round {round_.number}: answers by policy v{round_.policy.number}")

    if not round_.comparisons.exists() and not _pending(round_).exists():
        training_run_create(project=project, kind=RunKind.GENERATE, round=round_)
    drive_runs(round_, log=log)
    report.comparisons = round_.comparisons.count()
    if report.comparisons == 0:
        report.error = _last_error(round_) or "the round has no comparisons to judge"
        return report

    judging_started = time.perf_counter()
    simulation = simulate_judging(
        project=project,
        oracle=oracle,
        noise=noise,
        annotators=annotators,
        seed=seed,
        round=round_,
    )
    report.judgments = simulation.judgments
    report.seconds["judge"] = time.perf_counter() - judging_started
    round_.refresh_from_db()
    if round_.status == RoundStatus.OPEN:
        # Too few simulated annotators to fill every pair's overlap: close it as an admin would.
        round_finish(round=round_)
    drive_runs(round_, log=log)

    _collect_run_figures(round_, report)
    candidate = _candidate_of(round_)
    if candidate is None:
        report.error = _last_error(round_) or "no candidate was trained"
        return report
    report.candidate = candidate.number
    gates = candidate.gate_results.get("gates", {})
    report.reward_win_rate = gates.get(metric.WIN_RATE, {}).get("value")
    report.kl = gates.get(metric.KL, {}).get("value")
    report.heldout_accuracy = gates.get(metric.HELDOUT_ACCURACY, {}).get("value")
    report.gates_passed = gates_passed(candidate)
    report.oracle_win_rate = oracle_win_rate(candidate, oracle)
    candidate.refresh_from_db()
    if promote and report.gates_passed and candidate.status != VersionStatus.ACTIVE:
        version_promote(version=candidate, reason="run_loop: every gate passed")
    candidate.refresh_from_db()
    report.promoted = candidate.status == VersionStatus.ACTIVE
    report.seconds["total"] = time.perf_counter() - started
    return report


def _pending(round_: Round):
    return round_.training_runs.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])


def drive_runs(round_: Round, *, log: Log) -> None:
    """Carry out the round's queued runs here, or wait for the worker that claimed them, until
    none is pending. The chain queues each next step as the previous one succeeds."""
    waiting_on = None
    while (run := _pending(round_).order_by("id").first()) is not None:
        if run.status == RunStatus.QUEUED:
            log(f"  {run.kind} run {run.pk}")
            if training_run_execute(run_id=run.pk) is not None:
                run.refresh_from_db()
                if run.status != RunStatus.SUCCEEDED:
                    log(f"  {run.kind} run {run.pk} {run.status}: {run.error}")
                continue
        if waiting_on != run.pk:
            log(f"  waiting for {run.kind} run {run.pk} on worker {run.worker or '?'}")
            waiting_on = run.pk
        time.sleep(POLL_SECONDS)


def _collect_run_figures(round_: Round, report: RoundReport) -> None:
    """Seconds per stage from the runs' own start and finish times (whoever ran them)."""
    stage: dict[str, str] = {
        RunKind.GENERATE: "generate",
        RunKind.REWARD: "reward",
        RunKind.EVALUATE: "evaluate",
    }
    for run in round_.training_runs.filter(status=RunStatus.SUCCEEDED).order_by("id"):
        name = "policy" if run.kind in POLICY_RUN_KINDS else stage.get(run.kind, run.kind)
        if run.started_at and run.finished_at:
            seconds = (run.finished_at - run.started_at).total_seconds()
            report.seconds[name] = report.seconds.get(name, 0.0) + seconds
        if run.kind == RunKind.REWARD and run.output_version is not None:
            report.reward_accuracy = reward_accuracy(run.output_version.metrics)


def _candidate_of(round_: Round) -> ModelVersion | None:
    run = (
        round_.training_runs.filter(kind=RunKind.EVALUATE, status=RunStatus.SUCCEEDED)
        .order_by("-id")
        .first()
    )
    return run.input_version if run is not None else None


def _last_error(round_: Round) -> str:
    failed = (
        round_.training_runs.filter(Q(status=RunStatus.FAILED) | Q(status=RunStatus.CANCELLED))
        .order_by("-id")
        .first()
    )
    return f"{failed.kind} run {failed.pk} {failed.status}: {failed.error}" if failed else ""


def oracle_win_rate(candidate: ModelVersion, oracle: Oracle) -> float | None:
    """The oracle's verdict on the evaluation's answers: candidate against parent, ties half."""
    samples_file = candidate.gate_results.get("samples_file")
    if not samples_file or not Path(samples_file).exists():
        return None
    rows = [json.loads(line) for line in Path(samples_file).read_text().splitlines() if line]
    if not rows:
        return None
    wins = [oracle.prefer(row["prompt"], row["candidate"], row["parent"]) for row in rows]
    return sum(wins) / len(wins)


def _figure(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


TABLE_COLUMNS = (
    ("round", 5),
    ("by", 4),
    ("pairs", 5),
    ("judged", 6),
    ("RM acc", 6),
    ("cand", 4),
    ("RM win", 6),
    ("oracle win", 10),
    ("KL", 6),
    ("h-o acc", 7),
    ("gates", 5),
    ("promoted", 8),
    ("gen s", 6),
    ("judge s", 7),
    ("reward s", 8),
    ("policy s", 8),
    ("eval s", 6),
    ("total s", 7),
)


def report_table(reports: list[RoundReport]) -> str:
    header = " | ".join(name.rjust(width) for name, width in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    for r in reports:
        cells = (
            str(r.round),
            f"v{r.written_by}",
            str(r.comparisons),
            str(r.judgments),
            _figure(r.reward_accuracy),
            _figure(r.candidate, "v{}"),
            _figure(r.reward_win_rate),
            _figure(r.oracle_win_rate),
            _figure(r.kl),
            _figure(r.heldout_accuracy),
            "pass" if r.gates_passed else "fail",
            "yes" if r.promoted else "no",
            *(
                _figure(r.seconds.get(stage), "{:.0f}")
                for stage in ("generate", "judge", "reward", "policy", "evaluate", "total")
            ),
        )
        lines.append(" | ".join(c.rjust(w) for c, (_, w) in zip(cells, TABLE_COLUMNS, strict=True)))
    return "\n".join(lines)
