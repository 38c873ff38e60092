"""A DPO run on the real SmolLM2 beside the load bench, as the worker would train it.

    .venv/bin/python bench/background_dpo.py OUT_DIR [--threads N]

Prints one line per optimizer step, `step <n> <monotonic seconds>`, flushed, so the load bench
can count the steps made while the annotators judged. The thread limit is the worker's own
(`WORKER_TORCH_THREADS`, through the engine's `limit_threads`). Runs until killed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_vs_trl import BASE, BATCH, DEFAULT_DATA, LORA, read_alpaca_pairs  # noqa: E402

from training.engine import runtime  # noqa: E402
from training.engine.config import DPOConfig  # noqa: E402
from training.engine.dpo import train_dpo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "models")
    args = parser.parse_args()
    runtime.limit_threads(args.threads)
    config = DPOConfig(
        base_model=BASE, max_steps=100_000, batch_size=BATCH, learning_rate=5e-5,
        max_length=256, max_prompt_length=128, eval_fraction=0.0, checkpoint_every=100_000,
        lora=LORA, beta=0.1,
    )  # fmt: skip
    callbacks = runtime.Callbacks(
        on_progress=lambda step, _total: print(f"step {step} {time.monotonic()}", flush=True)
    )
    train_dpo(read_alpaca_pairs(DEFAULT_DATA), config, args.out, callbacks=callbacks,
              cache_dir=args.cache_dir)  # fmt: skip


if __name__ == "__main__":
    main()
