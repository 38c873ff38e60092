"""Tandem's engine against Hugging Face TRL on the same work, in one process, alternating.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/engine_vs_trl.py [--steps 30] [--rounds 1] [--only dpo,reward,generation]

SmolLM2-135M-Instruct, LoRA r16 on q,k,v,o, max length 256, 4 pairs per step, the same rows of
alpaca_eval_pairs.jsonl (GPT-4 preferences; ties dropped), the same learning rate, schedule and
step count for both. Each side is timed end to end, from rows in memory to a saved adapter
(model loading, tokenizing and TRL's reference precompute included). Held-out figures for DPO
are computed for both adapters by the same code (implicit reward accuracy and loss against the
adapter-free reference); the reward models are scored by each side's own evaluator on the same
held-out rows (TRL drops rows over max_length there too; the table says how many it kept).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.engine import runtime  # noqa: E402
from training.engine.config import DPOConfig, LoraSettings, RewardConfig  # noqa: E402
from training.engine.data import PreferenceRow, collate_policy_pairs, encode_pairs  # noqa: E402
from training.engine.dpo import train_dpo  # noqa: E402
from training.engine.losses import dpo_loss  # noqa: E402
from training.engine.models import completion_logprobs, load_tokenizer, resolve  # noqa: E402
from training.engine.reward import evaluate_reward_model, train_reward  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_pairs.jsonl"
BASE = "smollm2-135m-instruct"
MAX_LENGTH, MAX_PROMPT_LENGTH, BATCH = 256, 128, 4
LORA = LoraSettings(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def read_alpaca_pairs(path: Path) -> list[PreferenceRow]:
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["preference"] not in (1, 2):
            continue  # no preference: DPO has nothing to learn from it
        better, worse = (
            (record["output_1"], record["output_2"])
            if record["preference"] == 1
            else (record["output_2"], record["output_1"])
        )
        if better.strip() and worse.strip() and better != worse:
            rows.append(PreferenceRow(prompt=record["instruction"], chosen=better, rejected=worse))
    return rows


def as_conversations(rows: list[PreferenceRow]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": row.prompt}],
            "chosen": [{"role": "assistant", "content": row.chosen}],
            "rejected": [{"role": "assistant", "content": row.rejected}],
        }
        for row in rows
    ]


def free_memory() -> None:
    gc.collect()


# --- DPO -----------------------------------------------------------------------------------


def tandem_dpo(rows, steps, lr, out: Path) -> dict:
    config = DPOConfig(
        base_model=BASE, max_steps=steps, batch_size=BATCH, learning_rate=lr, warmup_ratio=0.1,
        max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH, eval_fraction=0.0,
        checkpoint_every=10_000, lora=LORA, beta=0.1,
    )  # fmt: skip
    losses: list[float] = []
    callbacks = runtime.Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    started = time.perf_counter()
    train_dpo(rows, config, out, callbacks=callbacks)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "losses": losses}


def trl_dpo(rows, steps, lr, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    started = time.perf_counter()
    path = resolve(BASE)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    args = TrlDPOConfig(
        output_dir=str(out / "trl-work"), per_device_train_batch_size=BATCH, max_steps=steps,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=int(steps * 0.1), bf16=True,
        precompute_ref_log_probs=True, max_length=MAX_LENGTH, beta=0.1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, max_grad_norm=1.0,
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    peft = LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, target_modules=LORA.target_modules,
                      lora_dropout=0.0, task_type="CAUSAL_LM")  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(as_conversations(rows)),
        processing_class=tokenizer, peft_config=peft,
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(out))
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    del trainer, model
    return {"seconds": seconds, "losses": losses}


@torch.inference_mode()
def dpo_heldout(adapter: Path, rows: list[PreferenceRow]) -> dict:
    """Implicit-reward accuracy and DPO loss of any PEFT adapter, against the adapter-free base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(BASE)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve(BASE), dtype=torch.float32), str(adapter)
    ).eval()
    pairs = encode_pairs(
        rows, tokenizer, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH
    )
    policy, reference = [], []
    for start in range(0, len(pairs), 8):
        batch = collate_policy_pairs(pairs[start : start + 8], tokenizer.pad_token_id)
        # Two plain sequences per pair (not the trainer's packed rows): an independent check.
        args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            policy.append(completion_logprobs(model, *args).float())
            with model.disable_adapter():
                reference.append(completion_logprobs(model, *args).float())
    half = lambda t: (t[: len(t) // 2], t[len(t) // 2 :])  # noqa: E731
    pc, pr = zip(*(half(t) for t in policy), strict=True)
    rc, rr = zip(*(half(t) for t in reference), strict=True)
    loss, stats = dpo_loss(torch.cat(pc), torch.cat(pr), torch.cat(rc), torch.cat(rr), beta=0.1)
    return {"loss": loss.item(), "accuracy": stats["rewards/accuracy"]}


# --- reward model --------------------------------------------------------------------------


def tandem_reward(rows, steps, lr, out: Path, heldout) -> dict:
    config = RewardConfig(
        base_model=BASE, max_steps=steps, batch_size=BATCH, learning_rate=lr, warmup_ratio=0.1,
        max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH, eval_fraction=0.0,
        checkpoint_every=10_000, lora=LORA,
    )  # fmt: skip
    losses: list[float] = []
    callbacks = runtime.Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    started = time.perf_counter()
    train_reward(rows, config, out, callbacks=callbacks)
    seconds = time.perf_counter() - started
    metrics = evaluate_reward_model(out, heldout)
    return {"seconds": seconds, "losses": losses, "accuracy": metrics["accuracy"],
            "evaluated": len(heldout), "trained_pairs": steps * BATCH}  # fmt: skip


def trl_reward(rows, steps, lr, out: Path, heldout) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    started = time.perf_counter()
    path = resolve(BASE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)  # the score head is drawn at load, before TRL seeds; Tandem seeds too
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    args = TrlRewardConfig(
        output_dir=str(out / "trl-work"), per_device_train_batch_size=BATCH, max_steps=steps,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=int(steps * 0.1), bf16=True,
        max_length=MAX_LENGTH, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        seed=0, max_grad_norm=1.0, dataloader_num_workers=0, disable_tqdm=True,
        per_device_eval_batch_size=8,
    )  # fmt: skip
    peft = LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, target_modules=LORA.target_modules,
                      lora_dropout=0.0, task_type="SEQ_CLS", modules_to_save=["score"])  # fmt: skip
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(as_conversations(rows)),
        eval_dataset=Dataset.from_list(as_conversations(heldout)),
        processing_class=tokenizer, peft_config=peft,
    )  # fmt: skip
    kept_train = len(trainer.train_dataset)
    trainer.train()
    trainer.save_model(str(out))
    seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = {"seconds": seconds, "losses": losses, "accuracy": metrics.get("eval_accuracy"),
              "evaluated": len(trainer.eval_dataset), "kept_train_rows": kept_train,
              "trained_pairs": steps * BATCH}  # fmt: skip
    del trainer, model
    return result


# --- the run -------------------------------------------------------------------------------


def tail_mean(values: list[float], count: int = 5) -> float:
    tail = values[-count:]
    return sum(tail) / len(tail) if tail else float("nan")


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per task")
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--reward-lr", type=float, default=1e-4)
    parser.add_argument("--only", default="dpo,reward,generation")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = read_alpaca_pairs(args.data)
    heldout, pool = rows[: args.heldout], rows[args.heldout :]
    train = pool[: args.steps * BATCH]
    tasks = set(args.only.split(","))
    print(f"{len(rows)} decided pairs; {len(train)} for training, {len(heldout)} held out; "
          f"{args.steps} steps of {BATCH} pairs; {torch.get_num_threads()} threads")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    try:
        if "dpo" in tasks:
            run_dpo(args, train, heldout, work)
        if "reward" in tasks:
            run_reward(args, pool, heldout, work)
        if "generation" in tasks:
            from bench.generation import print_generation_table, run_generation_benchmark

            options = argparse.Namespace(
                batch_size=16, new_tokens=128, prompts=32, data=None, rounds=args.rounds
            )
            print_generation_table(run_generation_benchmark(options))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_dpo(args, train, heldout, work: Path) -> None:
    results: dict[str, list[dict]] = {"trl": [], "tandem": []}
    for round_number in range(args.rounds):
        for name, fn in (("trl", trl_dpo), ("tandem", tandem_dpo)):
            out = work / f"dpo-{name}-{round_number}"
            result = fn(train, args.steps, args.dpo_lr, out)
            result.update(dpo_heldout(out, heldout))
            results[name].append(result)
            print(f"  dpo {name} round {round_number + 1}: {result['seconds']:.1f} s, "
                  f"final loss {tail_mean(result['losses']):.4f}", flush=True)  # fmt: skip
            free_memory()
    pairs = args.steps * BATCH
    table, rates = [], {}
    for name in ("trl", "tandem"):
        seconds = min(r["seconds"] for r in results[name])
        rates[name] = pairs / seconds
        last = results[name][-1]
        table.append([name, f"{seconds:.1f}", f"{rates[name]:.2f}",
                      f"{tail_mean(last['losses']):.4f}", f"{last['loss']:.4f}",
                      f"{last['accuracy']:.3f}"])  # fmt: skip
    table.append(["ratio", "", f"{rates['tandem'] / rates['trl']:.2f}x", "", "", ""])
    print_table(
        f"DPO, SmolLM2-135M LoRA r16, {args.steps} steps x {BATCH} pairs, max_length {MAX_LENGTH}",
        ["engine", "seconds", "pairs/s", "final loss (last 5)", "held-out loss", "held-out acc"],
        table,
    )


def fits(row: PreferenceRow, tokenizer) -> bool:
    """Whether prompt + the longer answer fit in MAX_LENGTH tokens as TRL renders them."""
    longest = max(row.chosen, row.rejected, key=len)
    messages = [{"role": "user", "content": row.prompt}, {"role": "assistant", "content": longest}]
    return len(tokenizer.apply_chat_template(messages, tokenize=True)) <= MAX_LENGTH


def run_reward(args, pool, heldout, work: Path) -> None:
    # TRL's RewardTrainer drops rows longer than max_length (Tandem truncates them). So that both
    # train on the very same rows, both get only rows that fit; the held-out rows stay as they
    # are (TRL scores the ones that fit, Tandem all of them).
    tokenizer = load_tokenizer(BASE)
    rows = [row for row in pool if fits(row, tokenizer)][: args.steps * BATCH]
    print(f"reward: {len(rows)} training rows that fit in {MAX_LENGTH} tokens, same for both")
    results: dict[str, list[dict]] = {"trl": [], "tandem": []}
    for round_number in range(args.rounds):
        for name in ("trl", "tandem"):
            out = work / f"rm-{name}-{round_number}"
            if name == "trl":
                result = trl_reward(rows, args.steps, args.reward_lr, out, heldout)
            else:
                result = tandem_reward(rows, args.steps, args.reward_lr, out, heldout)
            results[name].append(result)
            print(f"  reward {name} round {round_number + 1}: {result['seconds']:.1f} s, "
                  f"held-out accuracy {result['accuracy']:.3f}", flush=True)  # fmt: skip
            free_memory()
    pairs = args.steps * BATCH
    table, rates = [], {}
    for name in ("trl", "tandem"):
        seconds = min(r["seconds"] for r in results[name])
        rates[name] = pairs / seconds
        last = results[name][-1]
        table.append([name, f"{seconds:.1f}", f"{rates[name]:.2f}",
                      f"{tail_mean(last['losses']):.4f}", f"{last['accuracy']:.3f}",
                      str(last["evaluated"])])  # fmt: skip
    table.append(["ratio", "", f"{rates['tandem'] / rates['trl']:.2f}x", "", "", ""])
    print_table(
        f"Reward model, SmolLM2-135M LoRA r16, {args.steps} steps x {BATCH} pairs",
        ["engine", "seconds", "pairs/s", "final loss (last 5)", "held-out acc", "rows scored"],
        table,
    )


if __name__ == "__main__":
    main()
