"""Shared by the serving tests: the policy server as a real process on the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from peft import LoraConfig, get_peft_model

from registry.models import ModelKind, ModelVersion, VersionStatus
from registry.selectors import active_policy
from tests.engine.tiny import tiny_tokenizer
from tests.test_worker import ROOT
from training.engine.config import GenerationConfig
from training.engine.models import POLICY_ADAPTER, save_artifact


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_policy_version(
    project, base: Path, folder: Path, *, seed: int, number: int = 1
) -> ModelVersion:
    """A candidate v<number> with a random (non-zero) LoRA adapter, as DPO would register it."""
    from training.engine.models import load_policy

    model, _ = load_policy(str(base))
    torch.manual_seed(seed)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(model, lora)
    save_artifact(
        folder, kind=POLICY_ADAPTER, model=policy, tokenizer=tiny_tokenizer(),
        config=GenerationConfig(), base_model=str(base),
    )  # fmt: skip
    return ModelVersion.objects.create(
        project=project, kind=ModelKind.POLICY, number=number, base_model=str(base),
        artifact_path=str(folder), parent=active_policy(project_id=project.pk),
        status=VersionStatus.CANDIDATE,
    )  # fmt: skip


def start_server(database_url: str, artifacts: Path, port: int) -> subprocess.Popen:
    """`manage.py serve` on the test database, ready (its /readyz answers 200)."""
    environment = dict(
        os.environ,
        DATABASE_URL=database_url,
        SERVE_PRECISION="fp32",
        SERVE_TORCH_THREADS="1",
        ARTIFACTS_DIR=str(artifacts),
    )
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(process.stdout.read())
        time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
