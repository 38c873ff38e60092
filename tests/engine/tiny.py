"""Tiny random models saved as real model folders, so the engine loads them like any other."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from training.engine.data import PreferenceRow

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<|im_end|>", "<|im_start|>"]
WORDS = ["system", "user", "assistant", "yes", "no", "good", "bad", "answer"]
VOCAB = SPECIALS + WORDS + [f"w{i}" for i in range(40)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama_config(**overrides) -> LlamaConfig:
    """The tiny Llama's shape over tiny_tokenizer's vocabulary; overrides win."""
    values = dict(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=3,
    )
    return LlamaConfig(**(values | overrides))


def save_tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "user", "assistant", ":", *WORDS]
    vocab += [f"w{i}" for i in range(40)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    from transformers import BertTokenizer

    BertTokenizer.from_pretrained(folder).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def separable_rows(count: int, *, seed: int = 0) -> list[PreferenceRow]:
    """Chosen answers say "good yes", rejected ones "bad no": trivially separable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = " ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(2, 8)))
        filler = " ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(0, 4)))
        chosen, rejected = f"good yes {filler}".strip(), f"bad no {filler}".strip()
        rows.append(PreferenceRow(prompt=prompt, chosen=chosen, rejected=rejected))
    return rows
