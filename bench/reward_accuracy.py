"""What lifts the reward model's own accuracy: one change at a time against the project default,
held-out accuracy on alpaca_eval's decided GPT-4 preferences.

    .venv/bin/python bench/reward_accuracy.py [--folds 2] [--train-pairs 0] [--epochs 1]
        [--variants default,attention-only,longer,centred] [--threads 2]

The data: every decided pair of `../shared/data/alpaca_eval_pairs.jsonl` (text-davinci-003
against alpaca-7b, judged by GPT-4), split by prompt into `--folds` folds. Each variant trains
one SmolLM2-135M-Instruct reward model a fold, on the other folds' pairs (or the first
`--train-pairs` of them, on a slow machine), and is scored on every pair of its fold, so with
the full training sets every decided pair is held out exactly once. Rows longer than the budget
are cut, as the reward model cuts them (prompt from the left, answer from the right), never
dropped: the table counts how many were cut.

Variants, each one change to the engine's defaults (LoRA r16 on every linear layer; 256 tokens
with a 128-token prompt; no centring; the project's learning rate and one epoch):
- `attention-only`: LoRA on q, k, v and o alone, the default before every linear layer was;
- `longer`: a 512-token budget with a 256-token prompt, so more of the long answers is seen;
- `centred`: `center_rewards: 0.01`, rewards kept near zero;
- `all`: longer and centred together.
Each row of the table: accuracy with its 95% Wilson interval, the change against the default on
the same pairs (paired: pairs the variant gets right that the default gets wrong, and back), and
the training time. Figures from one machine compare only with each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.engine.config import LoraSettings, RewardConfig  # noqa: E402
from training.engine.data import PreferenceRow, encode_pairs  # noqa: E402
from training.engine.evaluate import RewardJudge  # noqa: E402
from training.engine.models import load_tokenizer  # noqa: E402
from training.engine.reward import train_reward  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_pairs.jsonl"
BASE = "smollm2-135m-instruct"
VARIANTS: dict[str, dict] = {
    "default": {},
    "attention-only": {"lora": LoraSettings()},  # the adapter's own default: q, k, v, o
    "longer": {"max_length": 512, "max_prompt_length": 256},
    "centred": {"center_rewards": 0.01},
    "all": {
        "max_length": 512,
        "max_prompt_length": 256,
        "center_rewards": 0.01,
    },
}


def decided_pairs(path: Path) -> list[PreferenceRow]:
    """Every pair GPT-4 decided, the better answer as chosen (empty answers kept: data)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["preference"] not in (1, 2) or record["output_1"] == record["output_2"]:
            continue
        first_better = record["preference"] == 1
        better, worse = record["output_1"], record["output_2"]
        if not first_better:
            better, worse = worse, better
        rows.append(PreferenceRow(prompt=record["instruction"], chosen=better, rejected=worse))
    return rows


def folds_of(rows: list[PreferenceRow], folds: int, seed: int = 0) -> list[list[int]]:
    """Row indices split by prompt into `folds` folds of near-equal size."""
    prompts = sorted({str(row.prompt) for row in rows})
    random.Random(seed).shuffle(prompts)
    fold_of = {prompt: index % folds for index, prompt in enumerate(prompts)}
    return [
        [i for i, row in enumerate(rows) if fold_of[str(row.prompt)] == fold]
        for fold in range(folds)
    ]


def cut_rows(rows: list[PreferenceRow], config: RewardConfig, cache_dir: Path) -> int:
    """How many pairs the budget cuts (prompt or either answer shortened)."""
    tokenizer = load_tokenizer(BASE, cache_dir=cache_dir)
    full = encode_pairs(rows, tokenizer, max_length=100_000, max_prompt_length=99_999)
    kept = encode_pairs(
        rows, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    return sum(
        (len(a.prompt_ids), len(a.chosen_ids), len(a.rejected_ids))
        != (len(b.prompt_ids), len(b.chosen_ids), len(b.rejected_ids))
        for a, b in zip(full, kept, strict=True)
    )


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def run_variant(
    name: str,
    rows: list[PreferenceRow],
    folds: list[list[int]],
    args: argparse.Namespace,
    cache_dir: Path,
    workdir: Path,
) -> tuple[dict[int, bool], float]:
    """Each held-out pair's verdict (chosen scored higher) and the seconds spent training."""
    verdicts: dict[int, bool] = {}
    seconds = 0.0
    for index, test in enumerate(folds):
        train = [i for f, fold in enumerate(folds) if f != index for i in fold]
        if args.train_pairs:
            train = train[: args.train_pairs]
        config = dataclasses.replace(
            RewardConfig(base_model=BASE, epochs=args.epochs, eval_fraction=0.0, seed=index),
            **VARIANTS[name],
        )
        output = workdir / f"{name}-{index}"
        started = time.perf_counter()
        train_reward([rows[i] for i in train], config, output, cache_dir=cache_dir)
        seconds += time.perf_counter() - started
        judge = RewardJudge(output, cache_dir=cache_dir)
        scores = judge.pair_scores([rows[i] for i in test])
        for i, (chosen, rejected) in zip(test, scores, strict=True):
            verdicts[i] = float(chosen) > float(rejected)
        shutil.rmtree(output, ignore_errors=True)
        print(f"  {name} fold {index + 1}/{len(folds)}: trained on {len(train)} pairs, "
              f"{sum(verdicts[i] for i in test) / len(test):.3f} on {len(test)} held out "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return verdicts, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--train-pairs", type=int, default=0, help="0: every other-fold pair")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.data.exists():
        parser.error(f"{args.data} not found (see ../shared/data/README.md)")
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        parser.error(f"--variants: unknown {unknown}; use some of {', '.join(VARIANTS)}")
    if args.folds < 2:
        parser.error("--folds: at least 2, so that every pair can be held out")
    if "default" not in names:
        names.insert(0, "default")  # every change is measured against it
    torch.set_num_threads(args.threads)
    cache_dir = Path(os.environ.get("MODEL_CACHE_DIR", ROOT / "var" / "models"))

    rows = decided_pairs(args.data)
    folds = folds_of(rows, args.folds)
    print(f"{len(rows)} decided pairs, {args.folds} folds by prompt; "
          f"training on {args.train_pairs or 'every other-fold'} pairs, {args.epochs} epoch(s)",
          flush=True)  # fmt: skip
    results: dict[str, tuple[dict[int, bool], float]] = {}
    with tempfile.TemporaryDirectory(prefix="reward-accuracy-") as workdir:
        for name in names:
            results[name] = run_variant(name, rows, folds, args, cache_dir, Path(workdir))

    print()
    base, _ = results["default"]
    print(f"{'variant':12s} {'accuracy':>9s} {'95% interval':>15s} {'vs default':>11s} "
          f"{'won/lost':>9s} {'cut rows':>9s} {'train s':>8s}")  # fmt: skip
    for name in names:
        verdicts, seconds = results[name]
        correct, n = sum(verdicts.values()), len(verdicts)
        low, high = wilson(correct, n)
        won = sum(verdicts[i] and not base[i] for i in verdicts)
        lost = sum(base[i] and not verdicts[i] for i in verdicts)
        config = dataclasses.replace(RewardConfig(base_model=BASE), **VARIANTS[name])
        cut = cut_rows(rows, config, cache_dir)
        print(f"{name:12s} {correct / n:9.3f} {f'{low:.3f}-{high:.3f}':>15s} "
              f"{(correct - sum(base.values())) / n:+11.3f} {f'{won}/{lost}':>9s} "
              f"{cut:>9d} {seconds:8.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
