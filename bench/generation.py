"""Tandem's sampling loop against plain `model.generate`, in one process, alternating.

    .venv/bin/python bench/generation.py [--batch-size 16] [--new-tokens 128] [--prompts 32]

SmolLM2-135M-Instruct, the first turn of each MT-bench question as a chat prompt, one sample per
prompt, temperature 0.8, top-p 0.95 (top-k off), the same max_new_tokens, end of sequence allowed
(min_new_tokens is not forced). HF generate gets batches of `batch_size` prompts in the given
order, left padded, under torch.no_grad (its own default) in fp32 and in bf16 autocast, where
autocast keeps a bf16 copy of each weight between steps. Tandem runs `generate` with the same
settings. Each call is timed end to end (tokenizing and decoding included); tokens/s counts new
tokens that are not padding, the end-of-sequence token included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.engine.config import GenerationConfig  # noqa: E402
from training.engine.generate import encode_prompts, generate, stop_token_ids  # noqa: E402
from training.engine.packaged import resolve_model_path  # noqa: E402
from training.engine.precision import autocast  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"
BASE = "smollm2-135m-instruct"
TEMPERATURE, TOP_P = 0.8, 0.95


def read_questions(path: Path, count: int) -> list[str]:
    import json

    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line)["turns"][0] for line in lines[:count]]


def load_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(os.environ.get("MODEL_CACHE_DIR", ROOT / "var" / "models"))
    folder = resolve_model_path(BASE, cache)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, tokenizer


def hf_generate(model, tokenizer, prompts: list[str], *, batch_size: int, new_tokens: int,
                precision: str, seed: int) -> int:  # fmt: skip
    """Plain `model.generate` over batches of left-padded prompts; returns new non-pad tokens."""
    device = next(model.parameters()).device
    stops = set(stop_token_ids(model, tokenizer))
    pad = tokenizer.pad_token_id
    prompt_ids = encode_prompts(tokenizer, prompts, 10_000)
    torch.manual_seed(seed)
    produced = 0
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        with autocast(precision, device):
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device),
                do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                max_new_tokens=new_tokens, pad_token_id=pad,
            )  # fmt: skip
        for row in out[:, width:].tolist():
            ends = [i for i, token in enumerate(row) if token in stops]
            kept = row[: ends[0] + 1] if ends else row
            tokenizer.decode(kept, skip_special_tokens=True)
            produced += len(kept)
    return produced


def tandem_generate(model, tokenizer, prompts: list[str], *, batch_size: int, new_tokens: int,
                    precision: str, seed: int) -> int:  # fmt: skip
    config = GenerationConfig(
        max_new_tokens=new_tokens, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
        samples_per_prompt=1, batch_size=batch_size, precision=precision, seed=seed,
    )  # fmt: skip
    return generate(model, tokenizer, prompts, config).new_tokens


METHODS = {"HF generate": hf_generate, "Tandem generate": tandem_generate}


def run_generation_benchmark(args: argparse.Namespace) -> list[dict]:
    """One row per (round, method, precision): new tokens, seconds, tokens/s, ratio vs HF."""
    torch.set_num_threads(2)
    data = Path(args.data) if getattr(args, "data", None) else DEFAULT_DATA
    prompts = read_questions(data, args.prompts)
    model, tokenizer = load_model()
    precisions = ("fp32", "bf16")
    for method in METHODS.values():  # first-call costs (kernel setup) stay out of the figures
        for precision in precisions:
            method(model, tokenizer, prompts[:2], batch_size=2, new_tokens=4,
                   precision=precision, seed=0)  # fmt: skip
    rows: list[dict] = []
    for round_number in range(getattr(args, "rounds", 1)):
        for precision in precisions:
            for name, method in METHODS.items():
                started = time.perf_counter()
                tokens = method(model, tokenizer, prompts, batch_size=args.batch_size,
                                new_tokens=args.new_tokens, precision=precision,
                                seed=round_number)  # fmt: skip
                seconds = time.perf_counter() - started
                rows.append({
                    "round": round_number, "method": name, "precision": precision,
                    "new_tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
                })  # fmt: skip
    for row in rows:  # against HF in the same round: neighbours in time share the machine's load
        hf = {r["precision"]: r["tokens_per_second"] for r in rows
              if r["method"] == "HF generate" and r["round"] == row["round"]}  # fmt: skip
        row["vs_hf_same_precision"] = row["tokens_per_second"] / hf[row["precision"]]
        row["vs_best_hf"] = row["tokens_per_second"] / max(hf.values())
    return rows


def print_generation_table(rows: list[dict]) -> None:
    print(f"{'round':>5}  {'method':<16} {'precision':<9} {'new tokens':>10} {'seconds':>8} "
          f"{'tokens/s':>8} {'vs HF same prec.':>16} {'vs best HF':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['round']:>5}  {r['method']:<16} {r['precision']:<9} {r['new_tokens']:>10} "
              f"{r['seconds']:>8.1f} {r['tokens_per_second']:>8.1f} "
              f"{r['vs_hf_same_precision']:>15.2f}x {r['vs_best_hf']:>9.2f}x")  # fmt: skip
    ours = [r for r in rows if r["method"] == "Tandem generate"]
    for precision in dict.fromkeys(r["precision"] for r in ours):
        same = [r["vs_hf_same_precision"] for r in ours if r["precision"] == precision]
        best = [r["vs_best_hf"] for r in ours if r["precision"] == precision]
        print(f"Tandem {precision}: median over {len(same)} round(s) "
              f"{statistics.median(same):.2f}x HF {precision}, "
              f"{statistics.median(best):.2f}x the faster HF")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"{BASE}, {args.prompts} MT-bench prompts, batch {args.batch_size}, "
          f"{args.new_tokens} new tokens, {2} threads")  # fmt: skip
    print_generation_table(run_generation_benchmark(args))


if __name__ == "__main__":
    main()
