"""Three closed-loop rounds on SmolLM2 with a simple oracle, on the embedded defaults.

    .venv/bin/python bench/loop.py [--rounds 3] [--prompts 64] [--max-words 80]

A fresh project (SQLite and artifacts under var/bench-loop/) gets `--prompts` alpaca_eval
instructions. Each round: SmolLM2 writes two answers per prompt, simulated annotators judge them
with the oracle "prefers answers under N words, then the shorter one", the reward model
(all-MiniLM-L6-v2, fully fine-tuned) trains on every pair so far, LoRA DPO continues the serving
adapter on the round's pairs, the candidate is evaluated against its parent on the held-out
prompts, and it is promoted when every gate passes: the same chain and services as a deployment
(training.loop.run_rounds).

After each round the serving version and the base model answer `--test-prompts` further
instructions the project never saw, with the same seeds, and the oracle judges them: the win rate
of each promoted version against the base (ties count half). Targets on 2 cores: a round under
6 minutes, the round-3 policy winning at least 70% against the base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var" / "bench-loop"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_pairs.jsonl"


def configure_django() -> None:
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ["VAR_DIR"] = str(VAR)
    os.environ.setdefault("MODEL_CACHE_DIR", str(ROOT / "var" / "models"))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("prepare_models", verbosity=0)


def read_instructions(path: Path, count: int, skip: int = 0) -> list[str]:
    seen, out = set(), []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["instruction"].strip()
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    return out[skip : skip + count]


def create_project(args: argparse.Namespace, prompts: list[str]):
    from annotate.services import project_create, prompts_create
    from training.management.commands.seed_demo import DEMO_TRAINING

    project = project_create(
        name="Bench loop",
        slug="bench-loop",
        reward_backbone="all-minilm-l6-v2",
        round_quota=len(prompts),
        gate_min_win_rate=0.5,
        gate_max_kl=args.max_kl,
        gate_min_heldout_accuracy=0.5,
    )
    project.generation_settings = {
        "max_new_tokens": args.new_tokens,
        "temperature": 0.8,
        "top_p": 0.95,
        "samples_per_prompt": 2,
    }
    project.training_settings = {
        # The demo's reward settings: the whole answer must fit for its length to be seen.
        "reward": dict(DEMO_TRAINING["reward"]),
        "dpo": {"learning_rate": args.dpo_lr, "epochs": args.dpo_epochs, "beta": 0.1},
        "evaluation": {"heldout_fraction": 0.2, "samples_per_prompt": 2},
    }
    project.save()
    prompts_create(
        project=project,
        rows=[{"text": text, "external_id": f"alpaca-{i}"} for i, text in enumerate(prompts)],
    )
    return project


def win_rate_against_base(version, prompts: list[str], oracle, new_tokens: int) -> float:
    """The oracle's verdict on `version` against the base on prompts the project never saw."""
    from django.conf import settings

    from training.engine.config import GenerationConfig
    from training.engine.evaluate import evaluate_policy

    if not version.artifact_path:
        return 0.5
    result = evaluate_policy(
        base_model=version.base_model,
        candidate_adapter=version.artifact_path,
        parent_adapter=None,  # the base model itself
        prompts=prompts,
        generation=GenerationConfig(max_new_tokens=new_tokens, samples_per_prompt=1, seed=99),
        cache_dir=settings.MODEL_CACHE_DIR,
    )
    verdicts = [oracle.prefer(p.prompt, p.candidate, p.parent) for p in result.pairs]
    return sum(verdicts) / len(verdicts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--test-prompts", type=int, default=32)
    parser.add_argument("--max-words", type=int, default=80)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--dpo-epochs", type=float, default=2.0)
    parser.add_argument("--max-kl", type=float, default=20.0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if not args.data.exists():
        parser.error(f"{args.data} not found (see ../shared/data/README.md)")

    configure_django()
    from registry.selectors import active_policy
    from training.loop import report_table, run_rounds
    from training.simulation import ShorterOracle

    prompts = read_instructions(args.data, args.prompts)
    test_prompts = read_instructions(args.data, args.test_prompts, skip=args.prompts)
    project = create_project(args, prompts)
    oracle = ShorterOracle(max_words=args.max_words)
    print(
        f"{args.rounds} rounds, {len(prompts)} prompts, oracle: under {args.max_words} words then "
        f"shorter; {len(test_prompts)} unseen prompts for the win rate against the base",
        flush=True,
    )
    reports, against_base = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        (report,) = run_rounds(
            project=project, rounds=1, oracle=oracle, seed=len(reports), log=print
        )
        reports.append(report)
        serving = active_policy(project_id=project.pk)
        against_base.append(
            (serving.number, win_rate_against_base(serving, test_prompts, oracle, args.new_tokens))
        )
        print(
            f"round {report.round}: {time.perf_counter() - started:.0f} s in all; serving "
            f"v{serving.number}, oracle win rate against the base {against_base[-1][1]:.2f}",
            flush=True,
        )
        if report.error:
            break
    print()
    print(report_table(reports))
    print()
    print("serving after round | version | oracle win rate vs base (unseen prompts)")
    for report, (number, rate) in zip(reports, against_base, strict=False):
        print(f"{report.round:>19} | {'v' + str(number):>7} | {rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
