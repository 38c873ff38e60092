"""Loading, wrapping and saving models: policies (causal LMs with LoRA) and reward models.

A model is named by a packaged name (prepared by `manage.py prepare_models`), a local folder or
a hub id. Artifacts are folders of safetensors plus `tandem_config.json` (the hyperparameters)
and `tandem_artifact.json` (what it is, what it was trained from), the latter written last, so
a folder without it is an interrupted run and is never loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from training.engine.attention import pair_attention
from training.engine.config import ALL_LINEAR, ConfigError, LoraSettings, save_config
from training.engine.data import (
    EncodedPair,
    collate_packed_pairs,
    collate_policy_pairs,
    collate_reward_pairs,
)
from training.engine.losses import frozen_projection_weight, projected_token_logprobs
from training.engine.packaged import resolve_model_path

# A causal LM as load_policy gives it: PEFT's wrapper around it when it carries an adapter.
PolicyModel = PreTrainedModel | PeftModel

ARTIFACT_FILE = "tandem_artifact.json"
POLICY_ADAPTER = "policy-adapter"
REWARD_ADAPTER = "reward-adapter"
REWARD_FULL = "reward-full"


class ArtifactError(ValueError):
    """A folder that is not a complete Tandem artifact of the expected kind."""


def quiet_transformers() -> None:
    """Loading reports and progress bars would flood worker logs and the CLI's own progress."""
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers


def default_cache_dir() -> Path:
    return Path(os.environ.get("MODEL_CACHE_DIR", "var/models"))


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(name_or_path: str, cache_dir: Path | None = None) -> str:
    quiet_transformers()
    return resolve_model_path(name_or_path, cache_dir or default_cache_dir())


# --- tokenizers ----------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str, *, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path, cache_dir))
    if tokenizer.pad_token_id is None:
        # Padding is always masked out, so any id works; eos is one every model has.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    tokenizer.padding_side = "right"
    return tokenizer


def stop_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends an answer: eos for chat models, [SEP] for BERT-style encoders."""
    token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else None
    token_id = token_id if token_id is not None else tokenizer.sep_token_id
    if token_id is None:
        raise ConfigError("The tokenizer has neither an eos nor a sep token to end answers with.")
    return int(token_id)


def context_length(model: torch.nn.Module) -> int | None:
    length: int | None = getattr(unwrap(model).config, "max_position_embeddings", None)
    return length


# --- policies ------------------------------------------------------------------------------------


def load_causal_lm(
    name_or_path: str, *, cache_dir: Path | None = None, device: torch.device | None = None
) -> PreTrainedModel:
    # Weights stay fp32: autocast runs the matmuls in bf16 where that is fast, and the
    # optimizer keeps exact fp32 master weights without a separate copy.
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        resolve(name_or_path, cache_dir), dtype=torch.float32
    )
    # Moves in place. transformers wraps Module.to with functools.wraps, which its types turn
    # into a function that wants the model as its first argument.
    model.to(device or pick_device())  # type: ignore[arg-type]
    return model


# Output layers an adapter never replaces: the language-model head, a reward model's head.
OUTPUT_LAYERS = frozenset({"lm_head", "score", "classifier"})


def lora_config(
    lora: LoraSettings, task_type: TaskType, modules_to_save: list[str] | None = None
) -> LoraConfig:
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The distinct leaf names of the model's linear layers, output layers left out."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    return sorted(names - OUTPUT_LAYERS)


def with_targets_resolved(model: torch.nn.Module, lora: LoraSettings) -> LoraSettings:
    """`all-linear` in target_modules stands for every linear layer of the backbone (attention
    and MLP), output layers excepted; the other names are checked against the model."""
    if ALL_LINEAR in lora.target_modules:
        lora = dataclasses.replace(lora, target_modules=linear_layer_names(model))
    _check_targets(model, lora)
    return lora


def _check_targets(model: torch.nn.Module, lora: LoraSettings) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [target for target in lora.target_modules if target not in names]
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} are not layers of this model; "
            f"its linear layers are: {', '.join(linear_layer_names(model))} "
            f"(or {ALL_LINEAR} for all of them)."
        )


def add_lora(model: PreTrainedModel, lora: LoraSettings) -> PeftModel:
    lora = with_targets_resolved(model, lora)
    adapted: PeftModel = get_peft_model(model, lora_config(lora, TaskType.CAUSAL_LM))
    return adapted


def load_policy(
    base_model: str,
    *,
    adapter: str | Path | None = None,
    lora: LoraSettings | None = None,
    trainable: bool = False,
    cache_dir: Path | None = None,
    device: torch.device | None = None,
) -> tuple[PolicyModel, PreTrainedTokenizerBase]:
    """The base model, with a saved adapter on top (to continue or to serve) or a fresh one."""
    base = load_causal_lm(base_model, cache_dir=cache_dir, device=device)
    tokenizer = load_tokenizer(base_model, cache_dir=cache_dir)
    model: PolicyModel = base
    if adapter is not None:
        read_artifact(adapter, expected=(POLICY_ADAPTER,))
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=trainable)
    elif lora is not None:
        model = add_lora(base, lora)
    if not trainable:
        model.eval()
    return model, tokenizer


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a PEFT (and accelerate) wrapper; LoRA layers stay in it."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"expected a transformers model inside {type(model).__name__}")
    return inner


def output_embeddings(model: PreTrainedModel) -> torch.nn.Module | None:
    """The layer that projects hidden states to the vocabulary; None for a model without one
    (a sequence classifier)."""
    head = model.get_output_embeddings()  # type: ignore[no-untyped-call]  # untyped in transformers
    return head if isinstance(head, torch.nn.Module) else None


def lm_head(model: PreTrainedModel) -> torch.nn.Module:
    head = output_embeddings(model)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output layer over the vocabulary")
    return head


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,  # (N, T) right-padded prompt + completion
    attention_mask: torch.Tensor,  # (N, T)
    loss_mask: torch.Tensor,  # (N, T) true on completion tokens
) -> torch.Tensor:  # (N,) summed log-probability of each completion
    """Sum of log p(token) over completion tokens, projecting to the vocabulary only there.

    The vocabulary projection is a fifth of a small model's compute and its fp32 log-softmax the
    largest tensor in the step; prompt and padding positions never need it.
    """
    inner = unwrap(model)
    hidden = backbone_hidden_states(inner, input_ids, attention_mask)  # (N, T, H)
    targets_mask = loss_mask[:, 1:].bool()  # hidden[t] predicts token t + 1
    selected = hidden[:, :-1][targets_mask]  # (M, H)
    targets = input_ids[:, 1:][targets_mask]  # (M,)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
    owners = rows.expand_as(targets_mask)[targets_mask]  # (M,) which sequence each token is in
    return _summed_token_logprobs(inner, selected, targets, owners, input_ids.shape[0])


def packed_completion_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor:  # (2B,) summed log-probability of each chosen, then each rejected answer
    """completion_logprobs on a packed batch (data.collate_packed_pairs): the same numbers, with
    each prompt computed once for both of its answers."""
    inner = unwrap(model)
    hidden = packed_hidden_states(inner, batch)  # (B*T, H)
    targets = batch["input_ids"].flatten()[batch["targets"]]  # (M,)
    answers = batch["answer_lengths"].shape[0]
    return _summed_token_logprobs(
        inner, hidden[batch["predictors"]], targets, batch["owners"], answers
    )


def _summed_token_logprobs(
    inner: PreTrainedModel,
    hidden: torch.Tensor,  # (M, H) the states that predict the M tokens
    targets: torch.Tensor,  # (M,) token ids
    owners: torch.Tensor,  # (M,) which of the `count` sequences each token belongs to
    count: int,
) -> torch.Tensor:  # (count,)
    head = lm_head(inner)
    weight = frozen_projection_weight(head)
    if weight is not None:  # the usual case: a chunk of (M, V) at a time
        token_logps, _ = projected_token_logprobs(hidden, weight, targets)  # (M,)
    else:
        logits = head(hidden).float()  # (M, V)
        token_logps = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(count, device=hidden.device).index_add(0, owners, token_logps)


def backbone_hidden_states(
    inner: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:  # (N, T, H)
    """Last hidden states of a decoder on right-padded rows.

    With right padding a real token never attends to a pad (pads come after it, and attention
    is causal), so the mask can be left out: that takes the plain causal attention kernel,
    and positions 0..T-1 are already right.
    """
    backbone = getattr(inner, inner.base_model_prefix)
    right_padded = bool((attention_mask[:, :1] == 1).all())
    mask = None if right_padded else attention_mask
    hidden: torch.Tensor = backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return hidden


def packed_hidden_states(
    inner: PreTrainedModel, batch: dict[str, torch.Tensor]
) -> torch.Tensor:  # (B*T, H), flat so the batch's flat indices pick from it
    """Last hidden states of a decoder on a packed pair batch, under its own mask and positions
    (attention row by row where that is faster: training/engine/attention.py)."""
    backbone = getattr(inner, inner.base_model_prefix)
    with pair_attention(backbone):
        hidden: torch.Tensor = backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).last_hidden_state
    return hidden.flatten(0, 1)


def packs_pairs(model: torch.nn.Module) -> bool:
    """Whether pair batches can be packed (data.collate_packed_pairs): the model is a decoder
    whose attention takes a custom mask. Encoders see both ways, so their prompt's states
    depend on the answer and cannot be shared."""
    inner = unwrap(model)
    decoder = hasattr(inner, "score") or output_embeddings(inner) is not None
    return decoder and getattr(inner.config, "_attn_implementation", None) == "sdpa"


def freeze_in_low_precision(model: torch.nn.Module, dtype: torch.dtype | None) -> None:
    """Store frozen weights in the autocast dtype; trained ones stay fp32. For models that then
    run under autocast, as every loop here does.

    Autocast would otherwise re-cast every frozen fp32 weight on every forward. The frozen base
    is never updated, so nothing is lost by keeping it in bf16 once.
    """
    if dtype is None:
        return
    for param in model.parameters():
        if not param.requires_grad and param.dtype == torch.float32:
            param.data = param.data.to(dtype)
    # Autocast hands each LoRA matmul bf16 inputs anyway; peft's own cast of the input to the
    # fp32 adapter weight would copy every activation twice more (a tenth of a DPO step).
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            # torch types a module's attributes as tensors or modules; this one is peft's flag.
            module.cast_input_dtype_enabled = False  # type: ignore[assignment]


# --- reward models -------------------------------------------------------------------------------


def _head_name(model: PreTrainedModel) -> str:
    for name in ("score", "classifier"):
        if hasattr(model, name):
            return name
    raise ConfigError(f"{type(model).__name__} has no score or classifier head.")


def load_reward_backbone(
    backbone: str,
    *,
    use_lora: bool,
    lora: LoraSettings,
    cache_dir: Path | None = None,
    device: torch.device | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A fresh reward model: the backbone with a one-output head, LoRA or fully trainable."""
    tokenizer = load_tokenizer(backbone, cache_dir=cache_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve(backbone, cache_dir), num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if use_lora:
        lora = with_targets_resolved(model, lora)
        model = get_peft_model(
            model, lora_config(lora, TaskType.SEQ_CLS, modules_to_save=[_head_name(model)])
        )
    return model.to(device or pick_device()), tokenizer


def reward_scores(
    model: torch.nn.Module,
    input_ids: torch.Tensor,  # (N, T) right-padded
    attention_mask: torch.Tensor,  # (N, T)
) -> torch.Tensor:  # (N,) float32 scalar rewards
    inner = unwrap(model)
    if not hasattr(inner, "score"):
        # Encoders (BERT) pool the [CLS] token through their own classifier.
        logits: torch.Tensor = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, 0].float()
    # Decoders: score the last real token ourselves. The library finds it by looking for the
    # pad id, which misfires when pad == eos and the answer ends with eos (as ours do).
    hidden = backbone_hidden_states(inner, input_ids, attention_mask)
    last = attention_mask.sum(dim=1) - 1  # (N,)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)
    scores: torch.Tensor = inner.get_submodule("score")(pooled)  # (N, 1)
    return scores[:, 0].float()


def packed_reward_scores(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor:  # (2B,) float32: each chosen, then each rejected answer's reward
    """reward_scores on a packed batch (a decoder's): the score at each answer's last token."""
    inner = unwrap(model)
    pooled = packed_hidden_states(inner, batch)[batch["last_positions"]]  # (2B, H)
    scores: torch.Tensor = inner.get_submodule("score")(pooled)  # (2B, 1)
    return scores[:, 0].float()


@contextmanager
def reward_head_inputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects, on every forward inside the block, the input of the one-output head: the
    features each reward is a linear function of ((N, H) per call, detached)."""
    inner = unwrap(model)
    head = inner.get_submodule(_head_name(inner))
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, args: tuple[Any, ...], _output: Any) -> None:
        captured.append(args[0].detach().float())

    handle = head.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


def reward_head_weight(model: torch.nn.Module) -> torch.Tensor:  # (H,)
    """The trained weight of the one-output head (LoRA keeps a trained copy of it)."""
    inner = unwrap(model)
    head = inner.get_submodule(_head_name(inner))
    trained_copies = getattr(head, "modules_to_save", None)
    if trained_copies is not None:
        head = next(iter(trained_copies.values()))
    weight = head.get_parameter("weight") if hasattr(head, "weight") else None
    if weight is None or weight.shape[0] != 1:
        raise ConfigError(f"{type(inner).__name__}: the reward head is not a one-output layer.")
    return weight.detach().float().reshape(-1)


def load_reward_model(
    artifact: str | Path, *, cache_dir: Path | None = None, device: torch.device | None = None
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A trained reward model for scoring (eval mode)."""
    info = read_artifact(artifact, expected=(REWARD_ADAPTER, REWARD_FULL))
    tokenizer = load_tokenizer(str(artifact))
    if info["kind"] == REWARD_FULL:
        model = AutoModelForSequenceClassification.from_pretrained(str(artifact))
    else:
        base = AutoModelForSequenceClassification.from_pretrained(
            resolve(info["base_model"], cache_dir), num_labels=1, dtype=torch.float32
        )
        base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, str(artifact))
    return model.to(device or pick_device()).eval(), tokenizer


# --- artifacts -----------------------------------------------------------------------------------


def save_artifact(
    folder: Path,
    *,
    kind: str,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: Any,
    base_model: str,
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Adapter (or full model) as safetensors, tokenizer, config; the marker file goes last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTIFACT_FILE).unlink(missing_ok=True)
    saved = getattr(model, "module", model)  # DistributedDataParallel
    if not isinstance(saved, PreTrainedModel | PeftModel):
        raise TypeError(f"cannot save a {type(saved).__name__} as an artifact")
    saved.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(folder)
    save_config(config, folder)
    import peft
    import transformers

    info = {
        "kind": kind,
        "base_model": base_model,
        "metrics": metrics or {},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        **(extra or {}),
    }
    (folder / ARTIFACT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return folder


def read_artifact(folder: str | Path, *, expected: tuple[str, ...]) -> dict[str, Any]:
    path = Path(folder) / ARTIFACT_FILE
    if not path.exists():
        raise ArtifactError(
            f"{folder} is not a complete Tandem artifact (no {ARTIFACT_FILE}); "
            "it may be from an interrupted run."
        )
    info: dict[str, Any] = json.loads(path.read_text())
    if info.get("kind") not in expected:
        raise ArtifactError(f"{folder} holds a {info.get('kind')}, not a {' or '.join(expected)}.")
    return info


def merge_adapter(adapter: str | Path, out: Path, *, cache_dir: Path | None = None) -> Path:
    """Fold a policy adapter into its base weights: one plain model folder, for other servers."""
    info = read_artifact(adapter, expected=(POLICY_ADAPTER,))
    model, tokenizer = load_policy(
        info["base_model"], adapter=adapter, cache_dir=cache_dir, device=torch.device("cpu")
    )
    assert isinstance(model, PeftModel)  # loaded with an adapter
    merged = model.merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# --- modules the loops train through ---------------------------------------------------------
# The loops call these wrappers, not the model's own forward: under DistributedDataParallel the
# gradient sync is set up by the wrapped module's forward, so it must be the one called.


class _PairModule(torch.nn.Module):
    """A model scoring both answers of each pair, and the batch layout it takes: packed where it
    can share the prompt (packs_pairs), else two sequences per pair (`sequence_collate`)."""

    sequence_collate: staticmethod[[Sequence[EncodedPair], int], dict[str, Any]]

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.packed = packs_pairs(model)

    def collate(self, pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, Any]:
        collate = collate_packed_pairs if self.packed else self.sequence_collate
        return collate(pairs, pad_id)

    def cost(self, pair: EncodedPair) -> int:
        """The pair's tokens in a batch of this layout, to bucket batches by."""
        return pair.packed_length if self.packed else pair.length


class PolicyLogprobs(_PairModule):
    """forward(batch) -> (2B,) log-probs of each pair's chosen, then rejected answer."""

    sequence_collate = staticmethod(collate_policy_pairs)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.packed:
            return packed_completion_logprobs(self.model, batch)
        return completion_logprobs(
            self.model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        )


class RewardScorer(_PairModule):
    """forward(batch) -> (2B,) rewards of each pair's chosen, then rejected answer."""

    sequence_collate = staticmethod(collate_reward_pairs)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.packed:
            return packed_reward_scores(self.model, batch)
        return reward_scores(self.model, batch["input_ids"], batch["attention_mask"])
