"""Three closed-loop rounds on SmolLM2 with a simple oracle, on the embedded defaults.

    .venv/bin/python bench/loop.py [--rounds 3] [--prompts 64] [--max-words 80]
        [--settings dpo,sft+dpo,offline,active] [--demonstration-share 0.25] [--oracle gold]
        [--no-gates]

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

`--settings` runs several projects one after the other in the same run, each with its own
rounds, and prints them side by side:
- `dpo`: every prompt is a pair; reward model, then DPO.
- `sft+dpo`: `--demonstration-share` of each round's prompts (held-out ones excepted) ask for a
  written answer instead of a choice. The simulated writer keeps the better answer shown and
  rewrites it to the oracle's guideline (whole sentences within half the word limit), so each
  round's chain is SFT on the new demonstrations, the reward model, then DPO starting from the
  SFT adapter. Same prompts, same annotators, same DPO settings; fewer pairs.
- `offline`: the loop's own claim tested. The same prompts and as many labels, all on the base
  model's answers: `--rounds` rounds of judging whose chains are cancelled (the base keeps
  serving), then one chain on every pair at once (`policy_data: all`), with the same DPO
  settings, so it takes as many DPO steps as the on-policy rounds together.
- `active`: `dpo` with every option for judgments to count: k = 4 answers a prompt, the pairs
  with the most expected information under the reward head's posterior (`pairing.strategy:
  information`), labels by the crowd model (`label_resolution: crowd`).

`--no-gates` promotes every candidate, so that each round's answers are the latest policy's:
with the gates, a candidate held back leaves the next round on its parent's answers, and the
`dpo` setting is then no longer the on-policy loop the `offline` one is measured against.

`--oracle gold` swaps the length oracle for a gold judge fitted on GPT-4's alpaca_eval
preferences (bench/gold_judge.py): annotators draw each choice from its Bradley-Terry
probability and the win rates against the base are its verdicts. The answers compared are
SmolLM2's own, which the gold judge never saw in fitting.
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
# --no-gates: thresholds every candidate passes, so each serves the next round, as in published
# iterative DPO (a KL of 1e9 nats no candidate reaches).
OPEN_GATES = {"gate_min_win_rate": 0.0, "gate_max_kl": 1e9, "gate_min_heldout_accuracy": 0.0}


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


SETTINGS = ("dpo", "sft+dpo", "offline", "active")


def create_project(args: argparse.Namespace, prompts: list[str], setting: str):
    from annotate.services import project_create, prompts_create
    from training.management.commands.seed_demo import DEMO_TRAINING

    gates = OPEN_GATES if args.no_gates else {
        "gate_min_win_rate": 0.5, "gate_max_kl": args.max_kl, "gate_min_heldout_accuracy": 0.5,
    }  # fmt: skip
    project = project_create(
        name=f"Bench loop ({setting})",
        slug=f"bench-loop-{setting.replace('+', '-')}",
        reward_backbone="all-minilm-l6-v2",
        round_quota=len(prompts),
        **gates,
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
    if setting == "sft+dpo":
        project.demonstration_share = args.demonstration_share
        project.training_settings["sft"] = {"learning_rate": args.sft_lr, "epochs": args.sft_epochs}
    if setting == "offline":
        project.training_settings["policy_data"] = "all"  # every round's pairs at once
    if setting == "active":
        project.training_settings["pairing"] = {"strategy": "information", "answers_per_prompt": 4}
        project.training_settings["label_resolution"] = "crowd"
    project.save()
    prompts_create(
        project=project,
        rows=[{"text": text, "external_id": f"alpaca-{i}"} for i, text in enumerate(prompts)],
    )
    return project


# The base model's answers to the unseen prompts, written once: its seeded samples are the same
# at every call, and writing them again would double each win rate's generation time.
BASE_ANSWERS: dict[tuple[str, ...], list[list[str]]] = {}


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
        parent_answers=BASE_ANSWERS.get(tuple(prompts)),
        prompts=prompts,
        generation=GenerationConfig(max_new_tokens=new_tokens, samples_per_prompt=1, seed=99),
        cache_dir=settings.MODEL_CACHE_DIR,
    )
    BASE_ANSWERS.setdefault(tuple(prompts), [[pair.parent] for pair in result.pairs])
    verdicts = [oracle.prefer(p.prompt, p.candidate, p.parent) for p in result.pairs]
    return sum(verdicts) / len(verdicts)


def run_setting(
    args: argparse.Namespace, setting: str, prompts: list[str], test_prompts: list[str], oracles
) -> tuple[list, list[tuple[int, float | None]], tuple[int, float] | None]:
    """One project's rounds; the reports, after each the serving version's win rate, and the
    last candidate's where a gate kept it from serving."""
    from registry.selectors import active_policy
    from training.loop import report_table, run_rounds

    annotators, judge = oracles
    project = create_project(args, prompts, setting)
    print(f"\n== {setting} ==", flush=True)
    reports, against_base = [], []
    for index in range(args.rounds):
        started = time.perf_counter()
        if setting == "offline" and index < args.rounds - 1:
            judged = collect_without_training(project, annotators, seed=index)
            against_base.append((active_policy(project_id=project.pk).number, None))
            print(f"round {index + 1}: {judged} judgments on the base model's answers, kept for "
                  f"one training after the last round ({time.perf_counter() - started:.0f} s)",
                  flush=True)  # fmt: skip
            continue
        (report,) = run_rounds(
            project=project, rounds=1, oracle=annotators, seed=len(reports), log=print
        )
        reports.append(report)
        serving = active_policy(project_id=project.pk)
        against_base.append(
            (serving.number, win_rate_against_base(serving, test_prompts, judge, args.new_tokens))
        )
        print(
            f"round {report.round}: {time.perf_counter() - started:.0f} s in all; serving "
            f"v{serving.number}, {judge.name} win rate against the base {against_base[-1][1]:.2f}",
            flush=True,
        )
        if report.error:
            break
    gated = final_candidate_rate(project, reports, test_prompts, judge, args.new_tokens)
    print()
    print(report_table(reports))
    return reports, against_base, gated


def final_candidate_rate(project, reports: list, test_prompts: list[str], judge, new_tokens: int):
    """The last round's candidate against the base when a gate kept it from serving: what
    its training bought, which the serving version's win rate does not show. None otherwise."""
    from registry.models import ModelKind, ModelVersion

    last = reports[-1] if reports else None
    if last is None or last.promoted or last.candidate is None:
        return None
    candidate = ModelVersion.objects.get(
        project=project, kind=ModelKind.POLICY, number=last.candidate
    )
    rate = win_rate_against_base(candidate, test_prompts, judge, new_tokens)
    print(f"the last candidate, v{candidate.number}, kept from serving by a gate: "
          f"{judge.name} win rate against the base {rate:.2f}", flush=True)  # fmt: skip
    return candidate.number, rate


def collect_without_training(project, annotators, seed: int) -> int:
    """A round of judgments on the serving policy's answers whose training chain is cancelled
    before it starts: offline data, bought the way the loop buys it."""
    from annotate.models import RoundStatus
    from training.loop import drive_runs
    from training.models import RunStatus
    from training.pipeline import round_start
    from training.services import training_run_cancel
    from training.simulation import simulate_judging

    round_, _ = round_start(project=project)
    drive_runs(round_, log=print)  # the generation run
    report = simulate_judging(project=project, oracle=annotators, seed=seed, round=round_)
    round_.refresh_from_db()
    if round_.status == RoundStatus.OPEN:
        round_close(round_)
    for run in round_.training_runs.filter(status=RunStatus.QUEUED):
        training_run_cancel(run=run)  # the quota trigger's chain: trained once, at the end
    return report.judgments


def round_close(round_) -> None:
    from annotate.services import round_close as close

    close(round=round_)


def make_oracles(args: argparse.Namespace):
    """The simulated annotators' oracle and the judge of the win rates against the base."""
    if args.oracle == "gold":
        from bench.gold_judge import GoldJudge, fit_gold_head

        judge = GoldJudge(fit_gold_head(args.data))
        return judge.annotators(seed=0), judge
    from training.simulation import ShorterOracle

    oracle = ShorterOracle(max_words=args.max_words)
    return oracle, oracle


def describe(args: argparse.Namespace, judge) -> str:
    if args.oracle == "gold":
        head = judge.head
        return (f"gold judge (agrees with GPT-4 on {head.agreement:.1%} of {head.decided} "
                f"decided pairs), annotators draw from it")  # fmt: skip
    return f"under {args.max_words} words then shorter"


def labels_bought(setting: str) -> tuple[int, int]:
    """Judgments on pairs and written answers, over every round of the setting's project."""
    from annotate.models import Demonstration, Judgment

    slug = f"bench-loop-{setting.replace('+', '-')}"
    judgments = Judgment.objects.filter(comparison__project__slug=slug).count()
    return judgments, Demonstration.objects.filter(project__slug=slug).count()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--test-prompts", type=int, default=32)
    parser.add_argument("--max-words", type=int, default=80)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--dpo-epochs", type=float, default=2.0)
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--demonstration-share", type=float, default=0.25)
    parser.add_argument("--max-kl", type=float, default=20.0)
    parser.add_argument("--settings", default="dpo", help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument(
        "--oracle", choices=("shorter", "gold"), default="shorter",
        help="shorter: under --max-words words, then shorter; gold: GPT-4's alpaca_eval judge",
    )  # fmt: skip
    parser.add_argument(
        "--no-gates", action="store_true",
        help="promote every candidate (every round on-policy): the loop's claim, measured alone",
    )  # fmt: skip
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if not args.data.exists():
        parser.error(f"{args.data} not found (see ../shared/data/README.md)")
    settings = [name.strip() for name in args.settings.split(",") if name.strip()]
    if not settings or any(name not in SETTINGS for name in settings):
        parser.error(f"--settings {args.settings!r}: use a comma-separated list of {SETTINGS}")
    if not 0 < args.demonstration_share < 1:
        parser.error("--demonstration-share: use a share between 0 and 1")
    if args.oracle == "gold" and "sft+dpo" in settings:
        parser.error("--oracle gold writes no answers: run sft+dpo with the shorter oracle")

    configure_django()
    prompts = read_instructions(args.data, args.prompts)
    test_prompts = read_instructions(args.data, args.test_prompts, skip=args.prompts)
    annotators, judge = make_oracles(args)
    print(
        f"{args.rounds} rounds, {len(prompts)} prompts, oracle: {describe(args, judge)}; "
        f"{len(test_prompts)} unseen prompts for the win rate against the base",
        flush=True,
    )
    results = {
        name: run_setting(args, name, prompts, test_prompts, (annotators, judge))
        for name in settings
    }
    print()
    header = " | ".join(f"{name:>18}" for name in settings)
    print(f"{judge.name} win rate vs base (unseen prompts), serving after round | {header}")
    for index in range(args.rounds):
        cells = []
        for name in settings:
            _, against_base, _ = results[name]
            if index < len(against_base):
                number, rate = against_base[index]
                cell = "collected" if rate is None else f"v{number} {rate:.2f}"
                cells.append(f"{cell:>18}")
            else:
                cells.append(f"{'-':>18}")
        print(f"{index + 1:>61} | {' | '.join(cells)}")
    gated = []
    for name in settings:
        final = results[name][2]
        gated.append(f"{'-' if final is None else f'v{final[0]} {final[1]:.2f}':>18}")
    print(f"{'last candidate, where a gate kept it from serving':>61} | {' | '.join(gated)}")
    bought = [labels_bought(name) for name in settings]
    pairs = " | ".join(f"{f'{j} judged, {w} written':>18}" for j, w in bought)
    print(f"{'labels bought':>61} | {pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
