"""The models in the server's memory: one base model per distinct base, each with its own
continuous batcher on its own thread, and the registry's adapters loaded onto it on demand.

An adapter is loaded under a name of its version's row id (`v<id>`), never reloaded in place: a
promotion changes which name `<slug>` resolves to, not what a name holds. The least recently
used adapters are unloaded past SERVE_ADAPTERS_IN_MEMORY.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from training.engine.batcher import ContinuousBatcher
from training.engine.data import Messages, chat_text
from training.engine.models import load_causal_lm, load_tokenizer, pick_device, resolve
from training.engine.ppo import RewardModelScore
from training.serving.catalog import ServedVersion

logger = logging.getLogger(__name__)

ADAPTER_LOAD_SECONDS = 120


class EngineError(Exception):
    """The server cannot serve this version now (its base or adapter failed to load)."""


@dataclass(frozen=True)
class EngineSettings:
    max_rows: int
    adapters_in_memory: int
    precision: str
    model_cache_dir: Path


class PolicyEngine:
    """One base model, its tokenizer, a batcher thread and the adapters loaded on it."""

    def __init__(self, base_model: str, settings: EngineSettings) -> None:
        self.base_model = base_model
        self.settings = settings
        model = load_causal_lm(base_model, cache_dir=settings.model_cache_dir)
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(
            base_model, cache_dir=settings.model_cache_dir
        )
        self.batcher = ContinuousBatcher(
            model, self.tokenizer, max_rows=settings.max_rows, precision=settings.precision
        )
        self._last_used: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.batcher.serve_forever, args=(self._stop,), name=f"batcher {base_model}",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    @property
    def context(self) -> int:
        return self.batcher.context

    def encode(self, messages: Messages) -> list[int]:
        text = chat_text(self.tokenizer, messages)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    async def adapter_for(self, version: ServedVersion) -> str | None:
        """The batcher's name for the version's adapter, loading it first if need be."""
        if not version.artifact_path:
            return None  # v0: the base model itself
        name = version.adapter_key
        self._last_used[name] = time.monotonic()
        if name not in self.batcher.adapters:
            loaded = self.batcher.load_adapter(name, version.artifact_path)
            if not await asyncio.to_thread(loaded.wait, ADAPTER_LOAD_SECONDS):
                raise EngineError(f"{version.name}: its adapter is still loading; try again.")
            if name not in self.batcher.adapters:
                raise EngineError(f"{version.name}: its adapter could not be loaded.")
            self._evict(keep=name)
        return name

    def forget(self, key: str) -> None:
        """Unload an adapter now (once its rows are done): a runtime name was unloaded."""
        self.batcher.unload_adapter(key)
        self._last_used.pop(key, None)

    def _evict(self, *, keep: str) -> None:
        loaded = [n for n in self.batcher.adapters if n != keep]
        excess = len(loaded) + 1 - self.settings.adapters_in_memory
        for name in sorted(loaded, key=lambda n: self._last_used.get(n, 0.0))[: max(0, excess)]:
            self.batcher.unload_adapter(name)
            self._last_used.pop(name, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class EnginePool:
    """The engines by base model, loaded at start (the bases in use) or on first request."""

    def __init__(self, settings: EngineSettings, *, max_bases: int = 2) -> None:
        self.settings = settings
        self.max_bases = max_bases
        self._engines: dict[str, PolicyEngine] = {}
        self._keys: dict[str, str] = {}  # base name -> resolved folder, looked up once
        self._loading = threading.Lock()
        self.preloaded = threading.Event()
        self.errors: dict[str, str] = {}

    def preload(self, bases: Sequence[str]) -> None:
        try:
            for base in list(bases)[: self.max_bases]:
                try:
                    self._load(base)
                except Exception as error:  # the server still serves the others
                    logger.exception("could not load base model %s", base)
                    self.errors[base] = str(error)
        finally:
            self.preloaded.set()

    @property
    def loaded(self) -> list[str]:
        return list(self._engines)

    def _key(self, base: str) -> str:
        # Every request names its base; resolving touches the filesystem, so once per name.
        if base not in self._keys:
            self._keys[base] = resolve(base, self.settings.model_cache_dir)
        return self._keys[base]

    def _load(self, base: str) -> PolicyEngine:
        key = self._key(base)
        with self._loading:  # one load at a time: two would double the memory for a while
            if key not in self._engines:
                if len(self._engines) >= self.max_bases:
                    raise EngineError(
                        f"This server holds {self.max_bases} base models already; {base!r} "
                        "needs a server of its own."
                    )
                started = time.perf_counter()
                self._engines[key] = PolicyEngine(base, self.settings)
                logger.info("loaded %s in %.1f s", base, time.perf_counter() - started)
            return self._engines[key]

    async def engine_for(self, base: str) -> PolicyEngine:
        engine = self._engines.get(self._key(base))
        if engine is not None:
            return engine
        return await asyncio.to_thread(self._load, base)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


class RewardScorers:
    """Reward models by version, loaded on first use; one scores at a time (2 cores)."""

    def __init__(self, settings: EngineSettings, *, keep: int = 2) -> None:
        self.settings = settings
        self.keep = keep
        self._scorers: dict[int, RewardModelScore] = {}
        self._lock = threading.Lock()

    def score(
        self, version: ServedVersion, prompts: Sequence[Messages], answers: Sequence[str]
    ) -> list[float]:
        with self._lock:
            scorer = self._scorers.pop(version.version_id, None)
            if scorer is None:
                scorer = RewardModelScore(
                    version.artifact_path, device=pick_device(),
                    precision=self.settings.precision, batch_size=16,
                    cache_dir=self.settings.model_cache_dir,
                )  # fmt: skip
            self._scorers[version.version_id] = scorer  # most recently used last
            while len(self._scorers) > self.keep:
                self._scorers.pop(next(iter(self._scorers)))
            return scorer(list(prompts), list(answers))
