"""Who writes a policy version's answers: the worker's own sampler, or an OpenAI-compatible
server (a project's `generation_backend`). Both give the same thing back, answers with their
token counts, so a round's provenance does not depend on where it was written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from annotate.models import Project
from registry.models import ModelVersion, VersionStatus
from training.engine.config import GenerationConfig
from training.engine.generate import Prompt
from training.engine.remote import RemoteBackend, RemoteError, RemoteGenerator, api_key_from
from training.project_settings import GenerationBackendSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenAnswer:
    text: str
    token_count: int  # as the in-process sampler counts: the end-of-turn token included
    finished: bool


class AnswerWriter(Protocol):
    def write(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
        *,
        on_progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> tuple[list[list[WrittenAnswer]], bool]:
        """Answers per prompt (complete prompts only) and whether it was stopped early."""
        ...

    def close(self) -> None: ...


class LocalWriter:
    """The version loaded on the worker, sampled by the engine's KV-cache loop."""

    def __init__(self, version: ModelVersion) -> None:
        from training.engine.models import load_policy

        self.model, self.tokenizer = load_policy(
            version.base_model,
            adapter=version.artifact_path or None,
            cache_dir=settings.MODEL_CACHE_DIR,
        )

    def write(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
        *,
        on_progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> tuple[list[list[WrittenAnswer]], bool]:
        from training.engine.generate import generate

        result = generate(
            self.model, self.tokenizer, prompts, config, on_batch=on_progress,
            should_stop=should_stop, on_step=on_progress,
        )  # fmt: skip
        answers = [
            [WrittenAnswer(s.text, s.token_count, s.finished) for s in samples]
            for samples in result.samples
        ]
        return answers, result.cancelled

    def close(self) -> None:
        pass


class RemoteWriter:
    """The version served by an OpenAI-compatible server; the worker only counts tokens."""

    def __init__(self, project: Project, version: ModelVersion, backend: GenerationBackendSettings):
        from training.engine.models import load_tokenizer

        self.remote = RemoteGenerator(
            RemoteBackend(
                base_url=backend.base_url,
                api_key=api_key_from(backend.api_key_env),
                timeout_seconds=backend.timeout_seconds,
                concurrency=backend.concurrency,
                max_retries=backend.max_retries,
            )
        )
        try:
            self.model = served_name(self.remote, project, version, backend)
        except BaseException:
            self.remote.close()
            raise
        self.tokenizer = load_tokenizer(version.base_model, cache_dir=settings.MODEL_CACHE_DIR)

    def write(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
        *,
        on_progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> tuple[list[list[WrittenAnswer]], bool]:
        per_prompt = config.samples_per_prompt

        def progress(done: int, total: int) -> None:
            on_progress(done * per_prompt, total * per_prompt)

        written = self.remote.generate(
            self.model, prompts, config, on_answer=progress, should_stop=should_stop
        )
        if written is None:
            return [], True
        return [[self._counted(a.text, a.finished) for a in answers] for answers in written], False

    def _counted(self, text: str, finished: bool) -> WrittenAnswer:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return WrittenAnswer(text, len(ids) + int(finished), finished)

    def close(self) -> None:
        self.remote.close()


def answer_writer(
    project: Project, version: ModelVersion, backend: GenerationBackendSettings
) -> AnswerWriter:
    if backend.kind == "openai":
        return RemoteWriter(project, version, backend)
    return LocalWriter(version)


# --- naming a version on the server --------------------------------------------------------------

ADAPTER_NAME = re.compile(r"^tandem-(?P<slug>[-\w]+)-v(?P<number>\d+)-(?P<pk>\d+)-[0-9a-f]+$")


def adapter_prefix(project: Project, version: ModelVersion) -> str:
    return f"tandem-{project.slug}-v{version.number}-{version.pk}"


def served_name(
    remote: RemoteGenerator,
    project: Project,
    version: ModelVersion,
    backend: GenerationBackendSettings,
) -> str:
    """The model name that makes the server answer as `version`, loading its adapter first
    where the server takes adapters at runtime (and unloading those of retired versions)."""
    if backend.adapters == "tandem":
        remote.check(adapters=False)
        return f"{project.slug}@v{version.number}"
    if not version.artifact_path:
        remote.check(adapters=False)
        return backend.model
    if backend.adapters == "none":
        raise RemoteError(
            f"v{version.number} is an adapter, and generation_backend.adapters is 'none': the "
            "server cannot load it. Use 'vllm' (vLLM or a Tandem policy server) or 'tandem'."
        )
    remote.check(adapters=True)
    name = remote.load_adapter(adapter_prefix(project, version), version.artifact_path)
    for stale in _retired_adapter_names(remote, project, keep=name):
        remote.unload(stale)
    return name


def _retired_adapter_names(remote: RemoteGenerator, project: Project, *, keep: str) -> list[str]:
    """This project's adapters on the server whose version no longer serves or waits."""
    names = []
    for model in remote.served_models():
        name = str(model.get("id", ""))
        match = ADAPTER_NAME.match(name)
        if match is None or match["slug"] != project.slug or name == keep:
            continue
        live = ModelVersion.objects.filter(
            pk=int(match["pk"]), status__in=[VersionStatus.ACTIVE, VersionStatus.CANDIDATE]
        ).exists()
        if not live:
            names.append(name)
    return names
