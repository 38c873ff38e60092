"""Carry out one training run: the bridge between the database and the engine.

A run's work folder (ARTIFACTS_DIR/<project>/runs/<run id>) holds the engine's checkpoints, so
a retried run resumes where the killed one stopped. When training succeeds the finished
artifact is renamed into the registry's folder (ARTIFACTS_DIR/<project>/<kind>/v<n>) in one
step and only then does a ModelVersion point at it: a half-trained model is never registered.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from annotate.feedback import resolved_pairs
from annotate.feedback.demonstration import accepted_demonstrations
from annotate.feedback.pairwise import prompt_messages
from annotate.feedback.rating import rated_answers
from annotate.models import (
    FeedbackKind,
    Project,
    Prompt,
    Rating,
    Response,
    ResponseSource,
    Round,
    RoundStatus,
)
from annotate.selectors import label_posterior
from annotate.services import PlannedPair, comparisons_create_for_round
from registry.models import ModelKind, ModelVersion
from registry.selectors import active_policy, reward_model_for
from registry.services import version_next_number
from training import version_metrics
from training.engine import metric_names as metric
from training.engine.config import GenerationConfig
from training.engine.evaluate import CandidateWriter
from training.engine.generate import Prompt as EnginePrompt
from training.generation import answer_writer
from training.models import RunKind, RunStatus, TrainingRun
from training.pairing import feedback_kinds_of_prompts
from training.pipeline import (
    chain_continue,
    demonstrations_trained,
    gates_check,
    prompt_is_heldout,
    prompts_in_split,
)
from training.project_settings import ProjectTrainingSettings, training_settings_of
from training.services import (
    training_run_beat,
    training_run_claim,
    training_run_finish,
    training_run_heartbeat,
    training_run_lock_if_ours,
    training_run_record_metrics,
)

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_work_dir(run: TrainingRun) -> Path:
    return Path(settings.ARTIFACTS_DIR) / run.project.slug / "runs" / str(run.pk)


def publish_artifact(work: Path, run: TrainingRun, kind: str, number: int) -> Path:
    """Move a finished artifact into the registry in one rename (same filesystem)."""
    final = Path(settings.ARTIFACTS_DIR) / run.project.slug / kind / f"v{number}"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work, final)
    return final


class DatabaseCallbacks:
    """Engine callbacks that write progress, heartbeats and metric points to the run's row."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.cancel = False

    def on_progress(self, step: int, total: int) -> None:
        self.cancel = training_run_heartbeat(run_id=self.run_id, step=step, total_steps=total)

    def on_metrics(self, step: int, split: str, metrics: dict[str, float]) -> None:
        training_run_record_metrics(run_id=self.run_id, step=step, split=split, metrics=metrics)

    def should_stop(self) -> bool:
        return self.cancel

    def engine(self):
        from training.engine.runtime import Callbacks

        return Callbacks(
            on_metrics=self.on_metrics, on_progress=self.on_progress, should_stop=self.should_stop
        )


def preference_rows(
    project, *, split: str = "train", round_id: int | None = None
) -> tuple[list, list[int]]:
    """Resolved comparisons as engine rows, and their ids (the training-data snapshot).

    split "train" leaves out the held-out prompts' pairs, "heldout" keeps only them (see
    training.pipeline); round_id keeps one round's pairs.
    """
    from training.engine.data import PreferenceRow

    loop_settings = training_settings_of(project)
    fraction = loop_settings.evaluation.heldout_fraction
    crowd = label_posterior(project=project, resolution=loop_settings.label_resolution)
    rows, ids = [], []
    for pair in resolved_pairs(project=project, include_ties=True, crowd=crowd):
        if prompt_is_heldout(pair.prompt_id, fraction) != (split == "heldout"):
            continue
        if round_id is not None and pair.round_id != round_id:
            continue
        rows.append(
            PreferenceRow(
                prompt=pair.prompt,
                chosen=pair.chosen,
                rejected=pair.rejected,
                weight=pair.weight,  # agreement, or the crowd model's posterior
                target=0.5 if pair.is_tie else 1.0,
                strength=pair.strength,  # the reward model's margin, DPO's weight
            )
        )
        ids.append(pair.comparison_id)
    return rows, ids


# Score points per unit of reward difference a rating pair asks for (rating_pair_rows).
RATING_TARGET_SCALE = 2.0


def rating_pair_rows(project: Project, *, split: str = "train") -> tuple[list, list[int]]:
    """Each rating of an item's two answers as a reward-model pair whose Bradley-Terry target
    is sigmoid((score_left - score_right) / RATING_TARGET_SCALE): the scores' difference is what
    a reward model can learn (its rewards are free up to a shift), so a thumbs up against a
    thumbs down asks for 0.95, one step on the 1-7 scale for 0.62 and equal scores for a tie."""
    from training.engine.data import PreferenceRow

    fraction = training_settings_of(project).evaluation.heldout_fraction
    ratings = Rating.objects.filter(comparison__project=project).select_related(
        "comparison__prompt", "left_response", "right_response"
    )
    rows, ids = [], []
    for rating in ratings.order_by("id").iterator(chunk_size=500):
        prompt_id = rating.comparison.prompt_id
        if prompt_is_heldout(prompt_id, fraction) != (split == "heldout"):
            continue
        gap = (rating.left_score - rating.right_score) / RATING_TARGET_SCALE
        rows.append(
            PreferenceRow(
                prompt=prompt_messages(rating.comparison.prompt),
                chosen=rating.left_response.text,
                rejected=rating.right_response.text,
                target=1 / (1 + math.exp(-gap)),
            )
        )
        ids.append(rating.pk)
    return rows, ids


def _train_version(
    run: TrainingRun,
    *,
    kind: str,
    train: Callable[..., Any],
    config: Any,
    parent: ModelVersion | None,
    rows: list,
    comparison_ids: list[int],
    callbacks: DatabaseCallbacks,
    training_data: dict[str, Any] | None = None,
) -> ModelVersion:
    from training.engine.config import config_to_dict

    if not rows:
        raise ValueError("There are no resolved comparisons to train on yet.")
    work = run_work_dir(run)
    result = train(
        rows, config, work, callbacks=callbacks.engine(), cache_dir=settings.MODEL_CACHE_DIR
    )
    with transaction.atomic():
        if not training_run_lock_if_ours(run_id=run.pk, worker=run.worker):
            # Reaped, cancelled or handed to another worker while training: the artifact stays
            # in the work folder (a retry resumes from its checkpoint) and nothing is registered.
            raise RunLost(f"Run {run.pk} is no longer this worker's; its model is not registered.")
        number = version_next_number(project_id=run.project_id, kind=kind)
        final = publish_artifact(work, run, kind, number)
        version = ModelVersion.objects.create(
            project=run.project,
            kind=kind,
            number=number,
            parent=parent,
            base_model=config.base_model,
            artifact_path=str(final),
            config=config_to_dict(config),
            metrics={
                **version_metrics.engine_metrics(result.train_metrics, result.eval_metrics),
                version_metrics.SECONDS: result.seconds,
            },
            training_data=training_data
            or {"comparisons": comparison_ids, "pairs": len(rows), "run": run.pk},
        )
        # Registered and succeeded in one transaction, under the run's row lock.
        training_run_finish(run_id=run.pk, status=RunStatus.SUCCEEDED, output_version=version)
        return version


def run_reward(run: TrainingRun, callbacks: DatabaseCallbacks) -> ModelVersion:
    from training.engine.config import RewardConfig, config_from_dict
    from training.engine.reward import train_reward

    project = run.project
    loop_settings = training_settings_of(project)
    settings_ = {
        "base_model": project.reward_backbone,
        # Chosen pairs need the doubt they ask about: heads that disagree, or the head's
        # posterior (engine.ensemble).
        **loop_settings.pairing.reward_doubt(),
        **loop_settings.overrides("reward"),
        **run.config,
    }
    config = config_from_dict(RewardConfig, settings_)
    rows, ids = preference_rows(project)
    rated: list[int] = []
    if training_settings_of(project).ratings_train_reward:
        rated_rows, rated = rating_pair_rows(project)
        rows += rated_rows
    parent = ModelVersion.objects.filter(project=project, kind=ModelKind.REWARD).last()
    version = _train_version(
        run,
        kind=ModelKind.REWARD,
        train=train_reward,
        config=config,
        parent=parent,
        rows=rows,
        comparison_ids=ids,
        callbacks=callbacks,
        training_data={"comparisons": ids, "ratings": rated, "pairs": len(rows), "run": run.pk},
    )
    reward_heldout_accuracy(version)
    return version


def reward_heldout_accuracy(version: ModelVersion) -> None:
    """Pairwise accuracy on the held-out prompts' human pairs, which training never saw."""
    from training.engine.reward import evaluate_reward_model

    rows, ids = preference_rows(version.project, split="heldout")
    if not rows:
        return
    metrics = evaluate_reward_model(
        Path(version.artifact_path), rows, cache_dir=settings.MODEL_CACHE_DIR
    )
    version.metrics = {
        **version.metrics,
        version_metrics.REWARD_HELDOUT_ACCURACY: metrics[metric.ACCURACY],
        version_metrics.REWARD_HELDOUT_PAIRS: len(rows),
    }
    version.training_data = {**version.training_data, "heldout_comparisons": ids}
    version.save(update_fields=["metrics", "training_data"])


def demonstration_rows(project: Project) -> tuple[list, list[int]]:
    """Accepted demonstrations no SFT version has trained on yet, as engine rows, and their ids.

    Each SFT step starts from the serving version's adapter, so what that version learned
    from earlier demonstrations is kept and only the new ones are taught."""
    from training.engine.data import DemonstrationRow

    rows, ids = [], []
    trained = demonstrations_trained(project)
    for shown in accepted_demonstrations(project=project, exclude_ids=trained):
        rows.append(DemonstrationRow(prompt=shown.prompt, completion=shown.completion))
        ids.append(shown.demonstration_id)
    return rows, ids


def run_sft(run: TrainingRun, callbacks: DatabaseCallbacks) -> ModelVersion:
    """Supervised fine-tuning on the new demonstrations; the round's policy step starts from
    its adapter (policy_start)."""
    from training.engine.config import SFTConfig, config_from_dict
    from training.engine.sft import train_sft

    project = run.project
    parent = active_policy(project_id=project.pk)
    settings_ = {
        "base_model": project.base_model,
        "init_adapter": parent.artifact_path or None,
        **training_settings_of(project).overrides("sft"),
        **run.config,
    }
    config = config_from_dict(SFTConfig, settings_)
    rows, ids = demonstration_rows(project)
    if not rows:
        raise ValueError("There are no new accepted demonstrations to fine-tune on.")
    return _train_version(
        run,
        kind=ModelKind.POLICY,
        train=train_sft,
        config=config,
        parent=parent,
        rows=rows,
        comparison_ids=[],
        callbacks=callbacks,
        training_data={"demonstrations": ids, "rows": len(rows), "run": run.pk},
    )


def policy_start(run: TrainingRun, serving: ModelVersion) -> ModelVersion:
    """Where a round's policy step starts: the SFT version its chain trained this round, if
    any, else the serving version."""
    if run.round_id is None:
        return serving
    sft = (
        TrainingRun.objects.filter(
            round_id=run.round_id, kind=RunKind.SFT, status=RunStatus.SUCCEEDED, chained=True
        )
        .exclude(output_version=None)
        .order_by("-id")
        .first()
    )
    return sft.output_version if sft is not None and sft.output_version else serving


def run_dpo(run: TrainingRun, callbacks: DatabaseCallbacks) -> ModelVersion:
    from training.engine.config import DPOConfig, config_from_dict
    from training.engine.dpo import train_dpo

    project = run.project
    parent = active_policy(project_id=project.pk)
    loop_settings = training_settings_of(project)
    start = policy_start(run, parent)
    settings_ = {
        "base_model": project.base_model,
        # An iterative round continues from the serving version's adapter (or this round's
        # SFT adapter, which continued from it).
        "init_adapter": start.artifact_path or None,
        **loop_settings.overrides("dpo"),
        **run.config,
    }
    config = config_from_dict(DPOConfig, settings_)
    on_policy = loop_settings.policy_data == "round" and run.round_id is not None
    rows, ids = preference_rows(project, round_id=run.round_id if on_policy else None)
    return _train_version(
        run,
        kind=ModelKind.POLICY,
        train=train_dpo,
        config=config,
        parent=parent,
        rows=rows,
        comparison_ids=ids,
        callbacks=callbacks,
    )


def rating_rows(project: Project, *, round_id: int | None) -> tuple[list, list[int]]:
    """Every rated answer (of one round, or all) as a KTO row, and the ratings' ids."""
    from training.engine.data import RatingRow, desirable_from_score

    rows, ids = [], []
    for rated in rated_answers(project=project, round_id=round_id):
        # The score decides: the KTO loop applies the project's desirable_score to it again.
        rows.append(
            RatingRow(
                prompt=rated.prompt,
                completion=rated.completion,
                desirable=desirable_from_score(rated.score),
                score=rated.score,
            )
        )
        ids.append(rated.rating_id)
    return rows, sorted(set(ids))


def run_kto(run: TrainingRun, callbacks: DatabaseCallbacks) -> ModelVersion:
    """KTO on the rated answers: each one desirable or not by the project's threshold."""
    from training.engine.config import KTOConfig, config_from_dict
    from training.engine.kto import train_kto

    project = run.project
    parent = active_policy(project_id=project.pk)
    loop_settings = training_settings_of(project)
    settings_ = {
        "base_model": project.base_model,
        "init_adapter": policy_start(run, parent).artifact_path or None,
        **loop_settings.overrides("kto"),
        **run.config,
    }
    config = config_from_dict(KTOConfig, settings_)
    on_policy = loop_settings.policy_data == "round" and run.round_id is not None
    rows, ids = rating_rows(project, round_id=run.round_id if on_policy else None)
    if not rows:
        raise ValueError("There are no rated answers to train on yet.")
    return _train_version(
        run,
        kind=ModelKind.POLICY,
        train=train_kto,
        config=config,
        parent=parent,
        rows=rows,
        comparison_ids=[],
        callbacks=callbacks,
        training_data={"ratings": ids, "rows": len(rows), "run": run.pk},
    )


def run_online_rl(run: TrainingRun, callbacks: DatabaseCallbacks) -> ModelVersion:
    """PPO or RLOO: the policy explores the training prompts, judged by the reward model (the
    one this round's chain trained, or the project's active one)."""
    from training.engine.config import PPOConfig, RLOOConfig, config_from_dict
    from training.engine.ppo import train_ppo, train_rloo

    project = run.project
    reward = run.input_version or reward_model_for(project_id=project.pk)
    if reward is None or reward.kind != ModelKind.REWARD:
        raise ValueError(f"{run.kind.upper()} trains against a reward model; train one first.")
    parent = active_policy(project_id=project.pk)
    loop_settings = training_settings_of(project)
    settings_ = {
        "base_model": project.base_model,
        "init_adapter": policy_start(run, parent).artifact_path or None,
        **loop_settings.overrides(run.kind),
        **run.config,
    }
    config: PPOConfig | RLOOConfig = (
        config_from_dict(PPOConfig, settings_)
        if run.kind == RunKind.PPO
        else config_from_dict(RLOOConfig, settings_)
    )
    fraction = loop_settings.evaluation.heldout_fraction
    prompts = prompts_in_split(project, fraction, heldout=False)

    if not prompts:
        raise ValueError("The project has no training prompts to explore.")
    reward_path = reward.artifact_path

    def train(rows: list[Any], config: Any, work: Path, *, callbacks: Any, cache_dir: Path) -> Any:
        train_online = train_ppo if isinstance(config, PPOConfig) else train_rloo
        return train_online(
            rows, config, work, reward=reward_path, callbacks=callbacks, cache_dir=cache_dir
        )

    return _train_version(
        run,
        kind=ModelKind.POLICY,
        train=train,
        config=config,
        parent=parent,
        rows=[prompt.messages or prompt.text for prompt in prompts],
        comparison_ids=[],
        callbacks=callbacks,
        training_data={
            "prompts": [prompt.pk for prompt in prompts],
            "reward_model": reward.number,
            "run": run.pk,
        },
    )


# Prompts per stored chunk of a round's answers, in generation batches.
GENERATE_CHUNK_BATCHES = 4


def run_generate(run: TrainingRun, callbacks: DatabaseCallbacks) -> None:
    """The round's policy writes answers to every prompt that has none yet in this round."""
    from training.engine.config import GenerationConfig, config_from_dict

    round_ = run.round
    if round_ is None:
        raise ValueError("A generate run needs the round whose answers it writes.")
    if round_.status != RoundStatus.OPEN:
        raise ValueError(f"Round {round_.number} is not open.")
    policy = round_.policy
    answered = Response.objects.filter(round=round_).values("prompt_id")
    prompts = list(
        Prompt.objects.filter(project=run.project).exclude(pk__in=answered).order_by("pk")
    )
    limit = run.config.get("max_prompts")
    if limit:  # a resumed run writes only what its first attempt had left
        prompts = prompts[: max(0, limit - answered.distinct().count())]
    if not prompts:
        return
    settings_ = {**run.project.generation_settings, **run.config.get("generation", {})}
    # A fresh seed per round: the same policy must not write the same answers twice, or a round
    # after a failed gate would only repeat the one before it.
    settings_["seed"] = settings_.get("seed", 0) + round_.number
    loop_settings = training_settings_of(run.project)
    if loop_settings.pairing.chooses:  # k answers to choose a pair among
        settings_["samples_per_prompt"] = max(
            settings_.get("samples_per_prompt", 2), loop_settings.pairing.answers_per_prompt
        )
    if run.project.ranking_share > 0:  # a ranking item shows ranking_size answers
        settings_["samples_per_prompt"] = max(
            settings_.get("samples_per_prompt", 2), run.project.ranking_size
        )
    config = config_from_dict(GenerationConfig, settings_)
    backend = loop_settings.generation_backend
    generation = {k: v for k, v in settings_.items() if k != "samples_per_prompt"}
    if backend.kind != "local":
        generation["backend"] = {"kind": backend.kind, "base_url": backend.base_url}
    writer = answer_writer(run.project, policy, backend)
    # Answers are stored a chunk of prompts at a time, each chunk whole (all its samples or
    # none), so a worker killed mid-round loses one chunk and the retry writes only the rest.
    chunk_size = max(1, GENERATE_CHUNK_BATCHES * config.batch_size // config.samples_per_prompt)
    rows_total = len(prompts) * config.samples_per_prompt
    cancelled = False
    try:
        for start in range(0, len(prompts), chunk_size):
            chunk = prompts[start : start + chunk_size]
            rows_before = start * config.samples_per_prompt

            def on_batch(done: int, _total: int, offset: int = rows_before) -> None:
                callbacks.on_progress(offset + done, rows_total)

            answers, cancelled = writer.write(
                [prompt.messages or prompt.text for prompt in chunk],
                # Each chunk draws its own randomness (the engine seeds rows by their index).
                dataclasses.replace(config, seed=config.seed * 1_000_003 + start),
                on_progress=on_batch,
                should_stop=callbacks.should_stop,
            )
            answered_in_full = [
                (prompt, samples)
                for prompt, samples in zip(chunk, answers, strict=False)
                if len(samples) == config.samples_per_prompt
            ]
            with transaction.atomic():  # the chunk is stored whole or not at all
                Response.objects.bulk_create(
                    Response(
                        prompt=prompt,
                        round=round_,
                        model_version=policy,
                        source=ResponseSource.POLICY,
                        text=sample.text,
                        token_count=sample.token_count,
                        finished=sample.finished,
                        generation_settings=generation,
                    )
                    for prompt, samples in answered_in_full
                    for sample in samples
                )
            if cancelled:
                break
    finally:
        writer.close()
    planned = round_pairs_planned(run.project, round_, loop_settings)
    fraction = loop_settings.evaluation.heldout_fraction
    project = run.project
    comparisons_create_for_round(
        round=round_,
        planned=planned,
        kind_of_prompt=feedback_kinds_of_prompts(
            list(answered.values_list("prompt_id", flat=True).distinct()),
            round_number=round_.number,
            shares={
                FeedbackKind.DEMONSTRATION: project.demonstration_share,
                FeedbackKind.RATING: project.rating_share,
                FeedbackKind.RANKING: project.ranking_share,
            },
            is_heldout=lambda prompt_id: prompt_is_heldout(prompt_id, fraction),
        ),
    )
    if cancelled:
        from training.engine.runtime import RunCancelled

        raise RunCancelled("stopped between batches")


def round_pairs_planned(
    project: Project, round_: Round, loop_settings: ProjectTrainingSettings
) -> list[PlannedPair]:
    """The round's pairs as the project's pairing strategy chooses them (training.pairing),
    scored by the project's reward model where the strategy asks for it and one exists."""
    from training.pairing import plan_round_pairs

    pairing = loop_settings.pairing
    reward = reward_model_for(project_id=project.pk) if pairing.chooses else None
    scorer, reward_version = None, None
    if reward is not None and reward.artifact_path:
        from training.engine.models import pick_device
        from training.engine.ppo import RewardModelScore

        scorer = RewardModelScore(
            reward.artifact_path, device=pick_device(), precision="auto", batch_size=16,
            cache_dir=settings.MODEL_CACHE_DIR,
        )  # fmt: skip
        reward_version = reward.number
    fraction = loop_settings.evaluation.heldout_fraction
    return plan_round_pairs(
        round_,
        settings=pairing,
        scorer=scorer,
        reward_version=reward_version,
        is_heldout=lambda prompt_id: prompt_is_heldout(prompt_id, fraction),
    )


def evaluation_samples_path(run: TrainingRun) -> Path:
    return Path(settings.ARTIFACTS_DIR) / run.project.slug / "evaluations" / f"run-{run.pk}.jsonl"


def run_evaluate(run: TrainingRun, callbacks: DatabaseCallbacks) -> None:
    """Measure a candidate policy against its parent and record the verdict of every gate."""
    from training.engine.config import GenerationConfig, config_from_dict
    from training.engine.evaluate import evaluate_policy

    candidate = run.input_version
    if candidate is None or candidate.kind != ModelKind.POLICY or not candidate.artifact_path:
        raise ValueError("Evaluate runs need a trained policy version (with an adapter).")
    project = run.project
    plan = training_settings_of(project).evaluation
    prompts = prompts_in_split(project, plan.heldout_fraction, heldout=True)
    if not prompts:
        raise ValueError(
            "The project has no held-out prompts; raise evaluation.heldout_fraction or add prompts."
        )
    prompts = prompts[: plan.max_prompts]
    generation = {
        **project.generation_settings,
        "samples_per_prompt": plan.samples_per_prompt,
        "seed": plan.seed,
        **({"max_new_tokens": plan.max_new_tokens} if plan.max_new_tokens else {}),
    }
    heldout_rows, heldout_ids = preference_rows(project, split="heldout")
    reward = reward_model_for(project_id=project.pk)
    parent = candidate.parent
    result = evaluate_policy(
        parent_answers=served_answers(parent, prompts) if parent is not None else None,
        base_model=candidate.base_model,
        candidate_adapter=candidate.artifact_path,
        parent_adapter=(parent.artifact_path or None) if parent is not None else None,
        prompts=[prompt.messages or prompt.text for prompt in prompts],
        generation=config_from_dict(GenerationConfig, generation),
        reward_model=reward.artifact_path if reward is not None else None,
        heldout_rows=heldout_rows,
        cache_dir=settings.MODEL_CACHE_DIR,
        on_progress=callbacks.on_progress,
        should_stop=callbacks.should_stop,
        candidate_writer=remote_candidate_writer(project, candidate, callbacks),
    )
    summary = result.summary()
    samples_file = write_evaluation_samples(run, prompts, result)
    verdict = gates_check(project=project, summary=summary)
    candidate.gate_results = {
        **verdict,
        "run": run.pk,
        "parent": parent.number if parent is not None else None,
        "reward_model": reward.number if reward is not None else None,
        "samples_file": str(samples_file),
        "heldout_comparisons": heldout_ids,
        "seconds": result.seconds,
    }
    candidate.metrics = {
        **candidate.metrics,
        **{version_metrics.gate_metric(k): v for k, v in summary.items() if v is not None},
    }
    candidate.save(update_fields=["gate_results", "metrics"])
    callbacks.on_metrics(0, "eval", {k: v for k, v in summary.items() if v is not None})


def remote_candidate_writer(
    project: Project, candidate: ModelVersion, callbacks: DatabaseCallbacks
) -> CandidateWriter | None:
    """Where the project writes through a server, the gates' samples are written there too;
    None keeps them on the worker. The log-prob and KL figures stay on the worker either way."""
    backend = training_settings_of(project).generation_backend
    if backend.kind == "local":
        return None

    def write(
        prompts: Sequence[EnginePrompt],
        config: GenerationConfig,
        on_progress: Callable[[int, int], None],
    ) -> list[list[tuple[str, bool]]]:
        writer = answer_writer(project, candidate, backend)
        try:
            answers, cancelled = writer.write(
                prompts, config, on_progress=on_progress, should_stop=callbacks.should_stop
            )
        finally:
            writer.close()
        if cancelled:
            from training.engine.runtime import RunCancelled

            raise RunCancelled("stopped while sampling")
        return [[(a.text, a.finished) for a in row] for row in answers]

    return write


def served_answers(version: ModelVersion, prompts: list[Prompt]) -> list[list[str]] | None:
    """What `version` already wrote to each prompt (its rounds' answers, newest first), so the
    evaluation compares against what annotators saw instead of sampling the parent again; None
    when some prompt has none."""
    by_prompt: dict[int, list[str]] = {}
    responses = Response.objects.filter(model_version=version, prompt__in=prompts).order_by("-id")
    for prompt_id, text in responses.values_list("prompt_id", "text"):
        by_prompt.setdefault(prompt_id, []).append(text)
    if any(prompt.pk not in by_prompt for prompt in prompts):
        return None
    return [by_prompt[prompt.pk] for prompt in prompts]


def write_evaluation_samples(run: TrainingRun, prompts: list[Prompt], result) -> Path:
    """Both policies' answers side by side, so anyone (or an oracle) can read the evidence."""
    path = evaluation_samples_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    per_prompt = len(result.pairs) // max(1, len(prompts))
    with partial.open("w", encoding="utf-8") as out:
        for index, pair in enumerate(result.pairs):
            row = {
                "prompt_id": prompts[index // per_prompt].pk,
                "prompt": pair.prompt,
                "candidate": pair.candidate,
                "parent": pair.parent,
                "candidate_tokens": pair.candidate_tokens,
                "parent_tokens": pair.parent_tokens,
            }
            if result.candidate_scores:
                row["candidate_score"] = result.candidate_scores[index]
                row["parent_score"] = result.parent_scores[index]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


RUNNERS: dict[str, Callable[[TrainingRun, DatabaseCallbacks], ModelVersion | None]] = {
    RunKind.GENERATE: run_generate,
    RunKind.SFT: run_sft,
    RunKind.REWARD: run_reward,
    RunKind.DPO: run_dpo,
    RunKind.PPO: run_online_rl,
    RunKind.RLOO: run_online_rl,
    RunKind.KTO: run_kto,
    RunKind.EVALUATE: run_evaluate,
}


class RunLost(Exception):
    """The run stopped being this worker's while it worked (reaped, cancelled, retried)."""


# The liveness beat: far more often than the reaper's limit (tasks.STALE_RUN_SECONDS).
HEARTBEAT_SECONDS = 30.0


@contextmanager
def beating_heart(run_id: int) -> Iterator[None]:
    """Beat the run's heartbeat from a thread while the body runs.

    Steps beat too, but some phases have none for a long time (loading a large model,
    reference log-probs, evaluation samples, held-out accuracy, a shared machine): a worker
    that is alive is never reaped. A killed worker stops beating with it.
    """
    stop = threading.Event()
    every_seconds = HEARTBEAT_SECONDS  # read now, so a test can shorten it

    def beat() -> None:
        try:
            while not stop.wait(every_seconds):
                try:
                    if not training_run_beat(run_id=run_id):
                        return  # finished, cancelled or reaped: nothing left to keep alive
                except Exception:  # a database hiccup must not kill the thread or the run
                    logger.exception("Heartbeat of run %s failed; trying again", run_id)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-run-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_seconds)


def training_run_execute(*, run_id: int, worker: str | None = None) -> str | None:
    """Claim the run and carry it out; returns its final status, or None if not claimed."""
    from training.engine.runtime import RunCancelled, limit_threads

    limit_threads(settings.WORKER_TORCH_THREADS)
    run = training_run_claim(run_id=run_id, worker=worker or worker_name())
    if run is None:
        return None  # another worker has it, or it was cancelled while queued
    runner = RUNNERS.get(run.kind)
    callbacks = DatabaseCallbacks(run.pk)
    try:
        if runner is None:
            raise NotImplementedError(f"{run.kind} runs are not available yet.")
        with beating_heart(run.pk):
            version = runner(run, callbacks)
    except RunLost as lost:
        logger.warning("%s", lost)
        return _status_of(run)
    except RunCancelled:
        training_run_finish(run_id=run.pk, status=RunStatus.CANCELLED, error="Cancelled.")
        return _status_of(run)
    except Exception as error:  # the row must say what went wrong, whatever it was
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        training_run_finish(run_id=run.pk, status=RunStatus.FAILED, error=detail)
        return _status_of(run)
    # Training kinds finished themselves with their version; the others finish here, and only
    # a run that is still this one's (not reaped meanwhile) goes on down its chain.
    training_run_finish(run_id=run.pk, status=RunStatus.SUCCEEDED, output_version=version)
    run.refresh_from_db()
    if run.status != RunStatus.SUCCEEDED:
        return run.status
    try:
        chain_continue(run)
    except Exception:  # the run itself succeeded; a broken next step must not undo that
        logger.exception("Run %s succeeded but its chain could not continue", run.pk)
    return RunStatus.SUCCEEDED


def _status_of(run: TrainingRun) -> str:
    run.refresh_from_db(fields=["status"])
    return run.status
