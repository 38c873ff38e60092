"""Tandem's policy server against `transformers serve --continuous-batching`, in one run.

    .venv/bin/python bench/serving.py [--clients 1,4,16,32] [--new-tokens 128] [--peer transformers]

Needs the bench extras (`pip install -e ".[bench]"`: transformers' serving extras and the openai
client). Both servers serve SmolLM2-135M-Instruct in bf16 on this machine, one after the other
(never at once: they would share the cores), and get the same load: `clients` concurrent
clients, each sending streamed chat completions of the first turns of MT-bench, one after the
other, max_tokens 128, temperature 0.8, top-p 0.95. Tokens are counted by re-tokenizing the
answers with the model's tokenizer (the same count for both servers); time to first token is
the time to the first chunk with text. Tandem's server runs on a scratch SQLite database with one
project; the bench also measures how long after a promotion the project's name answers with the
new version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"
BASE = "smollm2-135m-instruct"
TEMPERATURE, TOP_P = 0.8, 0.95

SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotate.services import project_create
admin = get_user_model().objects.create_user("bench", is_staff=True)
project_create(name="Bench", slug="bench", base_model="smollm2-135m-instruct")
print(Token.objects.create(user=admin).key)
"""


@dataclass
class Level:
    clients: int
    tokens: int
    seconds: float
    ttft: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    def ttft_quantile(self, q: float) -> float:
        ordered = sorted(self.ttft)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"the server exited: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {seconds} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


async def run_level(base_url: str, key: str, model: str, prompts: list[str], clients: int,
                    requests_per_client: int, new_tokens: int, count_tokens) -> Level:  # fmt: skip
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    ttft: list[float] = []
    texts: list[str] = []

    async def one(prompt: str) -> None:
        started = time.perf_counter()
        first = None
        text = ""
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True,
            max_tokens=new_tokens, temperature=TEMPERATURE, top_p=TOP_P,
        )  # fmt: skip
        async for chunk in stream:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                first = first if first is not None else time.perf_counter() - started
                text += piece
        ttft.append(first if first is not None else time.perf_counter() - started)
        texts.append(text)

    async def client_loop(index: int) -> None:
        for r in range(requests_per_client):
            await one(prompts[(index * requests_per_client + r) % len(prompts)])

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    seconds = time.perf_counter() - started
    await client.close()
    return Level(clients, sum(count_tokens(t) for t in texts), seconds, ttft)


def measure(base_url: str, key: str, model: str, prompts, levels, new_tokens, count_tokens):
    results = []
    asyncio.run(run_level(base_url, key, model, prompts, 1, 1, 8, count_tokens))  # warm-up
    for clients in levels:
        per_client = max(2, 8 // clients)  # at least 8 requests per level
        level = asyncio.run(
            run_level(base_url, key, model, prompts, clients, per_client, new_tokens, count_tokens)
        )
        print(
            f"  {clients:>2} clients: {level.tokens_per_second:7.1f} tokens/s, "
            f"TTFT p50 {level.ttft_quantile(0.5):.2f} s p99 {level.ttft_quantile(0.99):.2f} s",
            flush=True,
        )
        results.append(level)
    return results


def tandem_server(workdir: Path, port: int) -> tuple[subprocess.Popen, str, dict[str, str]]:
    environment = dict(
        os.environ,
        DEBUG="0",
        SECRET_KEY="bench-only",
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        BROKER_DIR=str(workdir / "broker"),
        ARTIFACTS_DIR=str(workdir / "artifacts"),
        CELERY_TASK_ALWAYS_EAGER="0",
        SERVE_PRECISION="bf16",
        SERVE_RATE_LIMIT_PER_MINUTE="0",
    )
    run = dict(cwd=ROOT, env=environment, check=True, capture_output=True, text=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], **run)
    key = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP], **run)
    token = key.stdout.strip().splitlines()[-1]
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/readyz", process)
    return process, token, environment


PROMOTE = """
import torch, time
from peft import LoraConfig, get_peft_model
from registry.models import ModelVersion
from registry.selectors import active_policy
from training.engine.config import GenerationConfig
from training.engine.models import POLICY_ADAPTER, load_policy, save_artifact
base = active_policy(project_id=1)
model, tokenizer = load_policy(base.base_model)
torch.manual_seed(0)
policy = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
folder = "{folder}"
save_artifact(folder, kind=POLICY_ADAPTER, model=policy, tokenizer=tokenizer,
              config=GenerationConfig(), base_model=base.base_model)
v1 = ModelVersion.objects.create(project_id=1, kind="policy", number=1, parent=base,
    base_model=base.base_model, artifact_path=folder)
from registry.services import version_promote
version_promote(version=v1)
print(time.time())
"""


def promotion_seconds(base_url: str, key: str, environment: dict[str, str], workdir: Path) -> float:
    """Seconds from a promotion's commit to the first answer of the project's name by it."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
    script = PROMOTE.replace("{folder}", str(workdir / "artifacts" / "v1"))
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=environment,
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    promoted = float(done.stdout.strip().splitlines()[-1])
    while True:
        answer = client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )
        if answer.model == "bench@v1":
            return time.time() - promoted
        time.sleep(0.05)


def transformers_server(folder: str, port: int) -> subprocess.Popen:
    executable = Path(sys.executable).parent / "transformers"
    process = subprocess.Popen(
        [str(executable), "serve", folder, "--continuous-batching", "--dtype", "bfloat16",
         "--device", "cpu", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/health", process)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--peer", choices=["transformers", "none"], default="transformers")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    prompts = [json.loads(line)["turns"][0] for line in args.data.read_text().splitlines() if line]

    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from training.engine.packaged import resolve_model_path

    folder = resolve_model_path(BASE, Path(os.environ.get("MODEL_CACHE_DIR", ROOT / "var/models")))
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    workdir = Path(tempfile.mkdtemp(prefix="tandem-serving-bench-"))
    print(f"SmolLM2-135M-Instruct, bf16, {args.new_tokens} new tokens, streamed, MT-bench prompts")
    try:
        port = free_port()
        process, key, environment = tandem_server(workdir, port)
        try:
            print("Tandem (manage.py serve)")
            ours = measure(f"http://127.0.0.1:{port}/v1", key, "bench", prompts, levels,
                           args.new_tokens, count_tokens)  # fmt: skip
            promotion = promotion_seconds(f"http://127.0.0.1:{port}/v1", key, environment, workdir)
            print(f"  a promotion answered by the new version after {promotion:.2f} s")
        finally:
            stop(process)
        theirs = None
        if args.peer == "transformers":
            port = free_port()
            process = transformers_server(folder, port)
            try:
                print("transformers serve --continuous-batching")
                theirs = measure(f"http://127.0.0.1:{port}/v1", "none", folder, prompts, levels,
                                 args.new_tokens, count_tokens)  # fmt: skip
            finally:
                stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        "| clients | Tandem tokens/s | TTFT p50 / p99 | transformers tokens/s | TTFT p50 / p99 "
        "| ratio |"
    )
    print("|---|---|---|---|---|---|")
    for i, level in enumerate(ours):
        peer = theirs[i] if theirs else None
        peer_cells = (
            f"{peer.tokens_per_second:.1f} | {peer.ttft_quantile(0.5):.2f} / "
            f"{peer.ttft_quantile(0.99):.2f} s | "
            f"{level.tokens_per_second / peer.tokens_per_second:.2f}x"
            if peer
            else "- | - | -"
        )
        print(
            f"| {level.clients} | {level.tokens_per_second:.1f} | {level.ttft_quantile(0.5):.2f} / "
            f"{level.ttft_quantile(0.99):.2f} s | {peer_cells} |"
        )
    print(f"\nPromotion visible to clients after {promotion:.2f} s.")
    if theirs:
        mean = statistics.mean(
            o.tokens_per_second / t.tokens_per_second for o, t in zip(ours, theirs, strict=True)
        )
        print(f"Mean throughput ratio over the levels: {mean:.2f}x")


if __name__ == "__main__":
    main()
