"""LoRA PPO and RLOO on SmolLM2-135M-Instruct against two rewards, one table row per iteration.

    nice -n 10 .venv/bin/python bench/ppo.py [--iterations 20] [--algorithms ppo,rloo]
        [--rewards oracle,rm] [--reward-model DIR] [--out var/bench-ppo]

Prompts: the alpaca_eval instructions (shared/data/alpaca_eval_pairs.jsonl). Each iteration
samples 64 new tokens for 16 answers (PPO: 16 prompts x 1; RLOO: 8 prompts x 2) and makes 4
passes over them in minibatches of 8. Rewards:
- oracle: 1 for an answer under 60 words, else 0. An answer that never ends within the 64 tokens
  pays the missing-eos penalty (1), so the reward says "answer, and answer briefly";
- rm: a Bradley-Terry reward model, all-MiniLM-L6-v2 fine-tuned with the engine's train_reward on
  the alpaca_eval pairs (GPT-4's preferences; ties as half targets), or --reward-model DIR.
The KL penalty starts at beta --kl-coef (0.1) with the adaptive controller aiming at --kl-target
(6) nats, moving beta by up to 10% per iteration (--kl-horizon 32), or stays fixed (--fixed-kl).
Prints per iteration: mean reward (score after the penalty), raw score, KL to the reference,
answer length in tokens and words, share of answers that ended, seconds of generation (sampling,
scoring, log-probs) and of update; then first-5 against last-5 means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.engine import metric_names as metric  # noqa: E402
from training.engine.config import PPOConfig, RewardConfig, RLOOConfig  # noqa: E402
from training.engine.data import PreferenceRow  # noqa: E402
from training.engine.models import ARTIFACT_FILE  # noqa: E402
from training.engine.ppo import train_ppo, train_rloo  # noqa: E402
from training.engine.reward import train_reward  # noqa: E402
from training.engine.runtime import Callbacks  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_pairs.jsonl"
BASE = "smollm2-135m-instruct"
BACKBONE = "all-minilm-l6-v2"
WORD_LIMIT = 60


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def preference_rows(records: list[dict]) -> list[PreferenceRow]:
    """alpaca_eval's preference: 1 means output_1 is better, 2 output_2, 0 no preference."""
    rows = []
    for record in records:
        target = {1: 1.0, 2: 0.0}.get(int(record["preference"]), 0.5)
        rows.append(
            PreferenceRow(
                prompt=record["instruction"],
                chosen=record["output_1"],
                rejected=record["output_2"],
                target=target,
            )
        )
    return rows


def oracle(prompts: list[str], answers: list[str]) -> list[float]:
    return [1.0 if len(answer.split()) < WORD_LIMIT else 0.0 for answer in answers]


def train_reward_model(records: list[dict], out: Path, steps: int | None) -> Path:
    if (out / ARTIFACT_FILE).exists():
        print(f"reward model: reusing {out}")
        return out
    config = RewardConfig(
        base_model=BACKBONE,
        use_lora=False,  # MiniLM is small enough to fine-tune whole
        learning_rate=5e-5,
        batch_size=16,
        epochs=1.0,
        max_steps=steps,
        max_length=160,
        max_prompt_length=64,
        eval_fraction=0.1,
        eval_every=1000,
        checkpoint_every=1000,
    )
    started = time.perf_counter()
    result = train_reward(preference_rows(records), config, out)
    print(
        f"reward model: {result.steps} steps in {time.perf_counter() - started:.0f} s, held-out "
        f"accuracy {result.eval_metrics.get(metric.ACCURACY, float('nan')):.3f} -> {out}"
    )
    return out


HEADER = (
    f"{'iter':>4} {'reward':>7} {'score':>7} {'kl':>6} {'beta':>6} {'tokens':>6} {'words':>6} "
    f"{'ended':>5} {'s gen':>6} {'s upd':>6}"
)


def run(algorithm: str, reward_name: str, reward, prompts: list[str], args) -> list[dict]:
    rows: list[dict] = []
    words: list[float] = []

    def on_metrics(step: int, split: str, m: dict[str, float]) -> None:
        if split != "train":
            return
        row = {**m, "iteration": step, "words": words[-1] if words else float("nan")}
        rows.append(row)
        print(
            f"{step:>4} {m[metric.REWARD]:>7.3f} {m[metric.SCORE]:>7.3f} {m[metric.KL]:>6.2f} "
            f"{m[metric.KL_COEF]:>6.3f} {m[metric.ANSWER_LENGTH]:>6.1f} {row['words']:>6.1f} "
            f"{m[metric.FINISHED]:>5.2f} {m[metric.SECONDS_GENERATION]:>6.1f} "
            f"{m[metric.SECONDS_UPDATE]:>6.1f}",
            flush=True,
        )

    def counting(prompts_: list[str], answers: list[str]) -> list[float]:
        words.append(sum(len(a.split()) for a in answers) / len(answers))
        return reward(prompts_, answers)

    scorer = counting if callable(reward) else reward
    common = dict(
        base_model=BASE,
        max_steps=args.iterations,
        max_new_tokens=64,
        max_length=256,
        max_prompt_length=128,
        update_epochs=4,
        batch_size=8,
        learning_rate=args.lr,
        temperature=0.7,
        kl_coef=args.kl_coef,
        adaptive_kl=not args.fixed_kl,
        kl_target=args.kl_target,
        kl_horizon=args.kl_horizon,
        checkpoint_every=1000,
        seed=args.seed,
    )
    out = args.out / f"{algorithm}-{reward_name}"
    print(f"\n{algorithm.upper()} x {reward_name}: {args.iterations} iterations -> {out}")
    print(HEADER)
    if algorithm == "ppo":
        config = PPOConfig(**common, prompts_per_iteration=16)
        train_ppo(prompts, config, out, reward=scorer, callbacks=Callbacks(on_metrics=on_metrics))
    else:
        config = RLOOConfig(**common, prompts_per_iteration=8, samples_per_prompt=2)
        train_rloo(prompts, config, out, reward=scorer, callbacks=Callbacks(on_metrics=on_metrics))
    return rows


def summarize(algorithm: str, reward_name: str, rows: list[dict], kl_target: float) -> str:
    def mean(key: str, part: list[dict]) -> float:
        return sum(r[key] for r in part) / len(part)

    head, tail = rows[:5], rows[-5:]
    seconds = [r[metric.SECONDS_GENERATION] + r[metric.SECONDS_UPDATE] for r in rows]
    return (
        f"{algorithm} x {reward_name}: reward {mean(metric.REWARD, head):.3f} -> "
        f"{mean(metric.REWARD, tail):.3f}, tokens {mean(metric.ANSWER_LENGTH, head):.1f} -> "
        f"{mean(metric.ANSWER_LENGTH, tail):.1f}, KL last-5 {mean(metric.KL, tail):.2f} (max "
        f"{max(r[metric.KL] for r in rows):.2f}, target {kl_target}), "
        f"{sum(seconds) / len(seconds):.1f} s/iteration (max {max(seconds):.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--algorithms", default="ppo,rloo")
    parser.add_argument("--rewards", default="oracle,rm")
    parser.add_argument("--reward-model", type=Path, help="skip training one")
    parser.add_argument("--rm-steps", type=int, help="cap the reward model's training steps")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--kl-target", type=float, default=6.0)
    parser.add_argument("--kl-coef", type=float, default=0.1, help="starting beta")
    # 20 iterations of 16 answers are only 320 episodes: a horizon of 32 lets beta move up to
    # 10% per iteration, enough to hold the KL near its target within such a short run.
    parser.add_argument("--kl-horizon", type=int, default=32)
    parser.add_argument("--fixed-kl", action="store_true", help="keep beta at --kl-coef")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-ppo")
    args = parser.parse_args()
    os.environ.setdefault("MODEL_CACHE_DIR", str(ROOT / "var" / "models"))

    records = read_rows(args.data)
    prompts = [r["instruction"] for r in records]
    summaries = []
    for reward_name in args.rewards.split(","):
        if reward_name == "oracle":
            reward = oracle
        else:
            reward = args.reward_model or train_reward_model(
                records, args.out / "reward-model", args.rm_steps
            )
        for algorithm in args.algorithms.split(","):
            rows = run(algorithm, reward_name, reward, prompts, args)
            summaries.append(summarize(algorithm, reward_name, rows, args.kl_target))
    print("\n" + "\n".join(summaries))


if __name__ == "__main__":
    main()
