"""`python -m training.engine reward|dpo|sft|kto|ppo|rloo|generate|evaluate ...`: the engine
without Django.

Reads JSONL, writes an output folder (or file), shows a progress bar, ends with one summary line.
Bad input (data, settings, missing models) is a message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.engine import metric_names as metric
from training.engine.config import (
    DPO_LOSS_TYPES,
    ConfigError,
    DPOConfig,
    GenerationConfig,
    KTOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    SFTConfig,
    config_from_dict,
)
from training.engine.data import (
    DataError,
    DemonstrationRow,
    PreferenceRow,
    RatingRow,
    read_demonstration_jsonl,
    read_preference_jsonl,
    read_rating_jsonl,
)
from training.engine.models import ArtifactError
from training.engine.packaged import ModelPreparationError

if TYPE_CHECKING:
    from tqdm import tqdm

    from training.engine.runtime import TrainResult

# ValueError covers inconsistent settings found while encoding (max_length beyond the context).
USER_ERRORS = (
    ConfigError,
    DataError,
    ArtifactError,
    ModelPreparationError,
    FileNotFoundError,
    ValueError,
)


class ProgressBar:
    """A tqdm bar fed by the loops' on_progress callback."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="step", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config values from --config (JSON) and then the named flags, which win."""
    values: dict[str, Any] = {}
    if args.config:
        values.update(json.loads(Path(args.config).read_text()))
    named = {
        "base_model": args.base,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_length": args.max_length,
        "max_prompt_length": args.max_prompt_length,
        "precision": args.precision,
        "seed": args.seed,
        "eval_fraction": args.eval_fraction,
    }
    values.update({key: value for key, value in named.items() if value is not None})
    return values


def _add_training_flags(
    parser: argparse.ArgumentParser, data: str = "preference JSONL (TRL format)"
) -> None:
    parser.add_argument("--data", required=True, type=Path, help=data)
    parser.add_argument("--base", help="packaged name, local folder or hub id")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--config", type=Path, help="JSON file with any config values")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--max-prompt-length", type=int)
    parser.add_argument("--eval-fraction", type=float)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache-dir", type=Path, help="prepared packaged models")


def _summary(kind: str, result: Any, unit: str = "pairs") -> str:
    train, evaluation = result.train_metrics, result.eval_metrics
    parts = [
        f"{kind}: {result.steps} steps in {result.seconds:.1f} s "
        f"({result.samples_per_second:.2f} {unit}/s)",
        f"train loss {train.get(metric.LOSS, float('nan')):.4f}",
    ]
    if evaluation:
        accuracy = evaluation.get(metric.ACCURACY, evaluation.get(metric.DPO_REWARDS_ACCURACY))
        parts.append(f"eval loss {evaluation[metric.LOSS]:.4f}")
        if accuracy is not None:
            parts.append(f"eval accuracy {accuracy:.3f}")
    if result.resumed_from_step:
        parts.append(f"resumed from step {result.resumed_from_step}")
    return ", ".join(parts) + f" -> {result.output_dir}"


# Skipped rows printed one by one before the rest is only counted.
SKIPS_SHOWN = 10


class SkipReport:
    """The readers' on_skip: the first SKIPS_SHOWN skipped rows said on stderr, then a count."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= SKIPS_SHOWN:
            print(f"warning: skipped {message}", file=sys.stderr)

    def close(self) -> None:
        if self.count > SKIPS_SHOWN:
            print(f"warning: skipped {self.count} rows in all", file=sys.stderr)


def read_pairs(path: Path) -> list[PreferenceRow]:
    """The file's usable pairs; each row skipped (it cannot be a pair) is said on stderr."""
    report = SkipReport()
    rows = read_preference_jsonl(path, on_skip=report)
    report.close()
    empty = sum(not row.chosen.strip() or not row.rejected.strip() for row in rows)
    if empty:
        print(f"note: {empty} pairs have an empty answer; kept (a silent reply can be the "
              "better one)", file=sys.stderr)  # fmt: skip
    return rows


def read_demonstrations(path: Path) -> list[DemonstrationRow]:
    """The file's usable demonstrations; each row skipped is said on stderr."""
    report = SkipReport()
    rows = read_demonstration_jsonl(path, on_skip=report)
    report.close()
    empty = sum(not row.completion.strip() for row in rows)
    if empty:
        print(f"note: {empty} demonstrations have an empty completion; kept (saying nothing "
              "can be the answer)", file=sys.stderr)  # fmt: skip
    return rows


def read_ratings(path: Path) -> list[RatingRow]:
    """The file's usable rated answers; each row skipped is said on stderr."""
    report = SkipReport()
    rows = read_rating_jsonl(path, on_skip=report)
    report.close()
    return rows


def run_dpo(args: argparse.Namespace) -> str:
    from training.engine.dpo import train_dpo
    from training.engine.runtime import Callbacks

    values = _training_overrides(args)
    named = {"beta": args.beta, "loss_type": args.loss_type, "init_adapter": args.init_adapter,
             "reference": args.reference}  # fmt: skip
    values.update({key: value for key, value in named.items() if value is not None})
    config = config_from_dict(DPOConfig, values)
    rows = read_pairs(args.data)
    bar = ProgressBar("dpo")
    try:
        result = train_dpo(
            rows, config, args.out, callbacks=Callbacks(on_progress=bar), cache_dir=args.cache_dir
        )
    finally:
        bar.close()
    return _summary("dpo", result)


def run_sft(args: argparse.Namespace) -> str:
    from training.engine.runtime import Callbacks
    from training.engine.sft import train_sft

    values = _training_overrides(args)
    named = {"init_adapter": args.init_adapter, "packing": args.packing}
    values.update({key: value for key, value in named.items() if value is not None})
    config = config_from_dict(SFTConfig, values)
    rows = read_demonstrations(args.data)
    bar = ProgressBar("sft")
    try:
        result = train_sft(
            rows, config, args.out, callbacks=Callbacks(on_progress=bar), cache_dir=args.cache_dir
        )
    finally:
        bar.close()
    return _summary("sft", result, "demonstrations")


def run_kto(args: argparse.Namespace) -> str:
    from training.engine.kto import train_kto
    from training.engine.runtime import Callbacks

    values = _training_overrides(args)
    named = {
        "beta": args.beta,
        "desirable_weight": args.desirable_weight,
        "undesirable_weight": args.undesirable_weight,
        "desirable_score": args.desirable_score,
        "init_adapter": args.init_adapter,
        "reference": args.reference,
    }
    values.update({key: value for key, value in named.items() if value is not None})
    config = config_from_dict(KTOConfig, values)
    rows = read_ratings(args.data)
    bar = ProgressBar("kto")
    try:
        result = train_kto(
            rows, config, args.out, callbacks=Callbacks(on_progress=bar), cache_dir=args.cache_dir
        )
    finally:
        bar.close()
    return _summary("kto", result, "answers")


def run_reward(args: argparse.Namespace) -> str:
    from training.engine.reward import train_reward
    from training.engine.runtime import Callbacks

    values = _training_overrides(args)
    if args.full_finetune:
        values["use_lora"] = False
    config = config_from_dict(RewardConfig, values)
    rows = read_pairs(args.data)
    bar = ProgressBar("reward")
    try:
        result = train_reward(
            rows, config, args.out, callbacks=Callbacks(on_progress=bar), cache_dir=args.cache_dir
        )
    finally:
        bar.close()
    return _summary("reward", result)


def run_evaluate(args: argparse.Namespace) -> str:
    from training.engine.reward import evaluate_reward_model

    rows = read_pairs(args.data)
    metrics = evaluate_reward_model(
        args.reward_model, rows, batch_size=args.batch_size, cache_dir=args.cache_dir
    )
    return (
        f"evaluate: {int(metrics[metric.PAIRS])} pairs, accuracy {metrics[metric.ACCURACY]:.3f}, "
        f"mean margin {metrics[metric.MARGIN]:.3f}, loss {metrics[metric.LOSS]:.4f}"
    )


def read_prompts(path: Path) -> list[str | list[dict[str, str]]]:
    """JSONL with one prompt a line: {"prompt": text or messages}, {"text": ...} or
    {"messages": [...]}."""
    prompts: list[str | list[dict[str, str]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        prompt = next(
            (record[key] for key in ("prompt", "messages", "text") if key in record), None
        ) if isinstance(record, dict) else None  # fmt: skip
        if not prompt:
            raise DataError(f"{path}, line {number}: needs a non-empty prompt, messages or text")
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def run_generate(args: argparse.Namespace) -> str:
    from training.engine.generate import generate
    from training.engine.models import load_policy

    values: dict[str, Any] = {}
    named = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "samples_per_prompt": args.n,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "precision": args.precision,
    }
    values.update({key: value for key, value in named.items() if value is not None})
    config = config_from_dict(GenerationConfig, values)
    prompts = read_prompts(args.prompts)
    model, tokenizer = load_policy(args.base, adapter=args.adapter, cache_dir=args.cache_dir)
    bar = ProgressBar("generate")
    try:
        result = generate(model, tokenizer, prompts, config, on_batch=bar)
    finally:
        bar.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for prompt, samples in zip(prompts, result.samples, strict=True):
            record = {
                "prompt": prompt,
                "samples": [
                    {"text": s.text, "token_count": s.token_count, "finished": s.finished}
                    for s in samples
                ],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return (
        f"generate: {len(prompts)} prompts x {config.samples_per_prompt} samples, "
        f"{result.new_tokens} new tokens in {result.seconds:.1f} s "
        f"({result.tokens_per_second:.1f} tokens/s) -> {args.out}"
    )


def _add_online_flags(parser: argparse.ArgumentParser, *, ppo: bool) -> None:
    parser.add_argument("--prompts", required=True, type=Path, help="JSONL of prompts")
    parser.add_argument(
        "--reward-model", required=True, type=Path, help="a reward model artifact folder"
    )
    parser.add_argument("--base", help="packaged name, local folder or hub id")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--config", type=Path, help="JSON file with any config values")
    parser.add_argument("--max-steps", type=int, help="iterations (rollout + update)")
    parser.add_argument(
        "--epochs", type=float, help="passes over the prompts (without --max-steps)"
    )
    parser.add_argument("--batch-size", type=int, help="answers per update minibatch")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--max-prompt-length", type=int)
    parser.add_argument("--eval-fraction", type=float, help="prompts held out for evaluation")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache-dir", type=Path, help="prepared packaged models")
    parser.add_argument("--init-adapter", help="start from this adapter (an iterative round)")
    parser.add_argument("--prompts-per-iteration", type=int)
    parser.add_argument("--samples-per-prompt", type=int, help="answers per prompt (RLOO: k)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--update-epochs", type=int, help="passes over each rollout")
    parser.add_argument("--kl-coef", type=float, help="beta, the KL penalty's weight")
    parser.add_argument("--kl-estimator", choices=["k1", "k3"])
    parser.add_argument(
        "--kl-target", type=float, help="turns on the adaptive KL controller aiming at this KL"
    )
    parser.add_argument("--missing-eos-penalty", type=float)
    parser.set_defaults(run=run_ppo if ppo else run_rloo)


def _online_summary(kind: str, result: Any, first: dict[str, float]) -> str:
    last = result.train_metrics
    nan = float("nan")
    parts = [
        f"{kind}: {result.steps} iterations in {result.seconds:.1f} s "
        f"({result.samples_per_second:.2f} answers/s)",
        f"score {first.get(metric.SCORE, nan):.3f} -> {last.get(metric.SCORE, nan):.3f}",
        f"kl {last.get(metric.KL, nan):.3f}",
        f"answer length {first.get(metric.ANSWER_LENGTH, nan):.1f} -> "
        f"{last.get(metric.ANSWER_LENGTH, nan):.1f} tokens",
    ]
    if result.eval_metrics:
        parts.append(f"eval score {result.eval_metrics[metric.SCORE]:.3f}")
    if result.resumed_from_step:
        parts.append(f"resumed from iteration {result.resumed_from_step}")
    return ", ".join(parts) + f" -> {result.output_dir}"


def _run_online(args: argparse.Namespace, kind: str) -> str:
    from training.engine.ppo import train_ppo, train_rloo
    from training.engine.runtime import Callbacks

    values = _training_overrides(args)
    named = {
        "init_adapter": args.init_adapter,
        "prompts_per_iteration": args.prompts_per_iteration,
        "samples_per_prompt": args.samples_per_prompt,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "update_epochs": args.update_epochs,
        "kl_coef": args.kl_coef,
        "kl_estimator": args.kl_estimator,
        "kl_target": args.kl_target,
        "missing_eos_penalty": args.missing_eos_penalty,
    }
    values.update({key: value for key, value in named.items() if value is not None})
    if args.kl_target is not None:
        values["adaptive_kl"] = True
    config = (
        config_from_dict(PPOConfig, values)
        if kind == "ppo"
        else config_from_dict(RLOOConfig, values)
    )
    prompts = read_prompts(args.prompts)
    if not (args.reward_model / "tandem_artifact.json").exists():
        raise FileNotFoundError(f"{args.reward_model} is not a reward model artifact folder")
    first: dict[str, float] = {}

    def keep_first(step: int, split: str, metrics: dict[str, float]) -> None:
        if split == "train" and not first:
            first.update(metrics)

    def train(callbacks: Callbacks) -> TrainResult:
        if isinstance(config, PPOConfig):
            return train_ppo(
                prompts, config, args.out, reward=args.reward_model, callbacks=callbacks,
                cache_dir=args.cache_dir,
            )  # fmt: skip
        return train_rloo(
            prompts, config, args.out, reward=args.reward_model, callbacks=callbacks,
            cache_dir=args.cache_dir,
        )  # fmt: skip

    bar = ProgressBar(kind)
    try:
        result = train(Callbacks(on_progress=bar, on_metrics=keep_first))
    finally:
        bar.close()
    return _online_summary(kind, result, first)


def run_ppo(args: argparse.Namespace) -> str:
    return _run_online(args, "ppo")


def run_rloo(args: argparse.Namespace) -> str:
    return _run_online(args, "rloo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dpo = commands.add_parser("dpo", help="train a LoRA policy adapter with DPO")
    _add_training_flags(dpo)
    dpo.add_argument("--beta", type=float)
    dpo.add_argument("--loss-type", choices=DPO_LOSS_TYPES)
    dpo.add_argument("--init-adapter", help="continue from this adapter (an iterative round)")
    dpo.add_argument("--reference", choices=["base", "init"])
    dpo.set_defaults(run=run_dpo)

    sft = commands.add_parser("sft", help="train a LoRA policy adapter on demonstrations")
    _add_training_flags(sft, "demonstration JSONL: messages, or prompt and completion (TRL's)")
    sft.add_argument("--init-adapter", help="continue from this adapter")
    sft.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        help="several short demonstrations to a row (on by default)",
    )
    sft.set_defaults(run=run_sft)

    kto = commands.add_parser("kto", help="train a LoRA policy adapter with KTO on rated answers")
    _add_training_flags(kto, "rating JSONL: prompt, completion and label or a 1-7 score")
    kto.add_argument("--beta", type=float)
    kto.add_argument("--desirable-weight", type=float, help="lambda_D")
    kto.add_argument("--undesirable-weight", type=float, help="lambda_U")
    kto.add_argument("--desirable-score", type=int, help="scores from here up are desirable")
    kto.add_argument("--init-adapter", help="continue from this adapter (an iterative round)")
    kto.add_argument("--reference", choices=["base", "init"])
    kto.set_defaults(run=run_kto)

    ppo = commands.add_parser("ppo", help="train a LoRA policy adapter with PPO on a reward model")
    _add_online_flags(ppo, ppo=True)
    rloo = commands.add_parser("rloo", help="train a LoRA policy adapter with RLOO")
    _add_online_flags(rloo, ppo=False)

    reward = commands.add_parser("reward", help="train a Bradley-Terry reward model")
    _add_training_flags(reward)
    reward.add_argument("--full-finetune", action="store_true", help="train every weight")
    reward.set_defaults(run=run_reward)

    evaluate = commands.add_parser("evaluate", help="a reward model's pairwise accuracy")
    evaluate.add_argument("--reward-model", required=True, type=Path)
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--cache-dir", type=Path)
    evaluate.set_defaults(run=run_evaluate)

    gen = commands.add_parser("generate", help="sample answers from a policy")
    gen.add_argument("--prompts", required=True, type=Path, help="JSONL of prompts")
    gen.add_argument("--base", default="smollm2-135m-instruct")
    gen.add_argument("--adapter", type=Path, help="a policy adapter folder")
    gen.add_argument("--out", required=True, type=Path, help="output JSONL")
    gen.add_argument("--n", type=int, help="samples per prompt")
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--batch-size", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    gen.add_argument("--cache-dir", type=Path)
    gen.set_defaults(run=run_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as error:
        print(f"error: --config is not valid JSON: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0
