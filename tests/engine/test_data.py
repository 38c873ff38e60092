"""Preference data: JSONL reading, tokenization, length bucketing and collation, on tiny
tokenizers built in memory (no download)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertTokenizer, PreTrainedTokenizerFast

from training.engine.data import (
    DataError,
    EncodedPair,
    PreferenceRow,
    collate_policy_pairs,
    collate_reward_pairs,
    encode_pairs,
    encode_prompt,
    length_bucketed_batches,
    read_preference_jsonl,
    render_prompt,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<eos>", "<|im_start|>", "<|im_end|>"]
WORDS = ["system", "user", "assistant", "user:", "assistant:", "hi", "yes", "no", "maybe"]
NUMBERS = [f"w{i}" for i in range(30)]
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS + NUMBERS)}
PAD, UNK, EOS, IM_START, IM_END = range(5)


def word_tokenizer(*, chat: bool) -> PreTrainedTokenizerFast:
    """Whitespace-split word-level tokenizer: one word, one id, easy to reason about."""
    model = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def ids(text: str) -> list[int]:
    return [VOCAB[word] for word in text.split()]


@pytest.fixture
def chat_tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(chat=True)


@pytest.fixture
def plain_tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(chat=False)


@pytest.fixture
def bert_tokenizer(tmp_path: Path) -> BertTokenizer:
    # BertTokenizer(vocab_file=...) ignores the vocab in transformers 5; from_pretrained reads it.
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "user", "assistant", "hi", "yes", "no"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizer.from_pretrained(tmp_path)


def write_jsonl(path: Path, *records: object) -> Path:
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return path


# --- reading JSONL -----------------------------------------------------------------------------


def test_reads_plain_rows_with_optional_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        {"prompt": "hi", "chosen": "yes", "rejected": "no"},
        {"prompt": "hi", "chosen": "yes", "rejected": "no", "weight": 2, "margin": 1.5},
        {"prompt": "hi", "chosen": "yes", "rejected": "no", "tie": True, "id": "ignored"},
        {"prompt": "hi", "chosen": "yes", "rejected": "no", "target": 0.8},
    )
    rows = read_preference_jsonl(path)
    assert rows[0] == PreferenceRow("hi", "yes", "no", source_line=1)
    assert (rows[1].weight, rows[1].margin, rows[1].target) == (2.0, 1.5, 1.0)
    assert rows[2].target == 0.5
    assert rows[3].target == 0.8


def test_reads_conversational_rows(tmp_path):
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        },
    )
    [row] = read_preference_jsonl(path)
    assert row == PreferenceRow(prompt, "yes", "no", source_line=1)


def test_reads_implicit_prompt_conversations(tmp_path):
    shared = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "ok?"},
    ]
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        {
            "chosen": [*shared, {"role": "assistant", "content": "yes"}],
            "rejected": [*shared, {"role": "assistant", "content": "no"}],
        },
    )
    [row] = read_preference_jsonl(path)
    assert row == PreferenceRow(shared, "yes", "no", source_line=1)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('\n{"prompt": "hi", "chosen": "yes", "rejected": "no"}\n\n')
    [row] = read_preference_jsonl(path)
    assert row.source_line == 2


GOOD = '{"prompt": "hi", "chosen": "yes", "rejected": "no"}'


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ('{"prompt": "hi", "chosen": "yes", "rejected": "no", "strength": "huge"}', '"strength"'),
        ('{"prompt": "hi", "chosen": "yes"}', 'missing field "rejected"'),
        ('{"chosen": "yes", "rejected": "no"}', 'missing field "prompt"'),
        ('{"prompt": "", "chosen": "yes", "rejected": "no"}', '"prompt" is empty'),
        ('["hi", "yes", "no"]', "expected a JSON object, got list"),
        ('{"prompt": "hi", "chosen": "yes", ', "invalid JSON"),
        ('{"prompt": "hi", "chosen": "yes", "rejected": "yes"}', "same text"),
        (
            '{"prompt": "hi", "chosen": "yes", "rejected": "no", "weight": 0}',
            '"weight" must be > 0',
        ),
        ('{"prompt": "hi", "chosen": "yes", "rejected": "no", "weight": -1}', "must be > 0"),
        ('{"prompt": "hi", "chosen": "yes", "rejected": "no", "weight": "2"}', "finite number"),
        ('{"prompt": "hi", "chosen": "yes", "rejected": "no", "target": 2}', "in [0, 1]"),
        ('{"prompt": "hi", "chosen": "yes", "rejected": "no", "tie": "yes"}', "true or false"),
        (
            '{"prompt": "hi", "chosen": "yes", "rejected": "no", "tie": true, "target": 1}',
            "a tie is 0.5",
        ),
        (
            '{"prompt": [{"role": "robot", "content": "hi"}], "chosen": "yes", "rejected": "no"}',
            "unknown role 'robot'",
        ),
        (
            '{"prompt": [{"role": "user"}], "chosen": "yes", "rejected": "no"}',
            '"prompt" message 0 must be',
        ),
        (
            '{"prompt": "hi", "chosen": [{"role": "assistant", "content": "a"}, '
            '{"role": "assistant", "content": "b"}], "rejected": "no"}',
            "multi-turn completions are not supported",
        ),
        (
            '{"prompt": "hi", "chosen": [{"role": "user", "content": "yes"}], "rejected": "no"}',
            '"chosen" must be one assistant message',
        ),
        (
            '{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],'
            ' "rejected": [{"role": "user", "content": "ho"}, '
            '{"role": "assistant", "content": "b"}]}',
            "same turns before the last",
        ),
    ],
)
def test_bad_rows_are_skipped_and_reported_naming_file_and_line(tmp_path, bad_line, fault):
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"{GOOD}\n{GOOD}\n{bad_line}\n{GOOD}\n")
    skipped: list[str] = []
    rows = read_preference_jsonl(path, on_skip=skipped.append)
    assert [row.source_line for row in rows] == [1, 2, 4]
    (message,) = skipped
    assert f"{path}, line 3: " in message and fault in message
    with pytest.raises(DataError) as caught:
        read_preference_jsonl(path, strict=True)
    assert f"{path}, line 3: " in str(caught.value)
    assert fault in str(caught.value)


def test_an_empty_answer_is_an_answer_and_strength_is_read(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"prompt": "How do I pick a lock?", "chosen": "", "rejected": "First, a wrench."}\n'
        '{"prompt": "hi", "chosen": "hello", "rejected": "  ", "strength": "strong"}\n'
    )
    silent, greeting = read_preference_jsonl(path, strict=True)
    assert silent.chosen == "" and silent.strength is None
    assert greeting.rejected == "  " and greeting.strength == "strong"


def test_non_utf8_bytes_raise_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(GOOD.encode() + b'\n{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"line 2: not valid UTF-8 .*save the file as UTF-8"):
        read_preference_jsonl(path, strict=True)
    skipped: list[str] = []
    assert len(read_preference_jsonl(path, on_skip=skipped.append)) == 1
    assert "line 2: not valid UTF-8" in skipped[0]


def test_a_file_without_one_usable_row_is_a_data_error_naming_the_first_fault(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "hi", "chosen": "yes"}\n')
    with pytest.raises(DataError, match=r"no preference rows \(1 skipped\); first: .*line 1"):
        read_preference_jsonl(path)


def test_empty_file_is_a_data_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no preference rows"):
        read_preference_jsonl(path)


# --- tokenization ------------------------------------------------------------------------------


def test_render_prompt_applies_the_chat_template_with_a_generation_prompt(chat_tokenizer):
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt("hi", chat_tokenizer) == text
    assert render_prompt([{"role": "user", "content": "hi"}], chat_tokenizer) == text


def test_render_prompt_without_a_template_is_a_plain_transcript(plain_tokenizer):
    assert render_prompt("hi", plain_tokenizer) == "hi"
    messages = [{"role": "system", "content": "w1"}, {"role": "user", "content": "hi"}]
    assert render_prompt(messages, plain_tokenizer) == "system: w1\nuser: hi\nassistant:"


def test_encode_with_a_chat_template_adds_no_extra_special_tokens(chat_tokenizer):
    [pair] = encode_pairs(
        [PreferenceRow("hi", "yes", "no maybe")],
        chat_tokenizer,
        max_length=20,
        max_prompt_length=10,
    )
    assert pair.prompt_ids == [IM_START, *ids("user hi"), IM_END, IM_START, *ids("assistant")]
    assert pair.chosen_ids == [*ids("yes"), EOS]
    assert pair.rejected_ids == [*ids("no maybe"), EOS]
    assert (pair.weight, pair.margin, pair.target, pair.row) == (1.0, 0.0, 1.0, 0)
    assert encode_prompt("hi", chat_tokenizer) == pair.prompt_ids


def test_prompt_is_truncated_from_the_left_keeping_its_last_tokens(plain_tokenizer):
    prompt = " ".join(f"w{i}" for i in range(20))
    [pair] = encode_pairs(
        [PreferenceRow(prompt, "yes", "no")], plain_tokenizer, max_length=10, max_prompt_length=5
    )
    assert pair.prompt_ids == ids("w15 w16 w17 w18 w19")


def test_completion_is_truncated_from_the_right_to_fit_max_length(plain_tokenizer):
    [pair] = encode_pairs(
        [PreferenceRow("hi", "w1 w2 w3 w4 w5", "no")],
        plain_tokenizer,
        max_length=4,
        max_prompt_length=2,
    )
    assert pair.prompt_ids == ids("hi")
    assert pair.chosen_ids == ids("w1 w2 w3")  # cut: it did not end here, so no eos
    assert pair.rejected_ids == [*ids("no"), EOS]


def test_prompt_longer_than_the_model_context_is_a_data_error_naming_the_row(plain_tokenizer):
    rows = [
        PreferenceRow("hi", "yes", "no", source_line=1),
        PreferenceRow("w1 w2 w3 w4 w5 w6", "yes", "no", source_line=7),
    ]
    with pytest.raises(DataError, match=r"row 1 \(line 7\): prompt is 6 tokens, longer than the "):
        encode_pairs(rows, plain_tokenizer, max_length=5, max_prompt_length=3, context_length=5)


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ({"max_length": 10, "max_prompt_length": 10}, "max_prompt_length must be in"),
        ({"max_length": 10, "max_prompt_length": 0}, "max_prompt_length must be in"),
        ({"max_length": 1, "max_prompt_length": 1}, "max_length must be at least 2"),
        (
            {"max_length": 10, "max_prompt_length": 5, "context_length": 8},
            "longer than the model's context of 8",
        ),
    ],
)
def test_encode_refuses_inconsistent_lengths(plain_tokenizer, lengths, message):
    with pytest.raises(ValueError, match=message):
        encode_pairs([PreferenceRow("hi", "yes", "no")], plain_tokenizer, **lengths)


def test_bert_pairs_read_cls_prompt_sep_answer_sep(bert_tokenizer):
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    hi, yes, no = bert_tokenizer.convert_tokens_to_ids(["hi", "yes", "no"])
    [pair] = encode_pairs(
        [PreferenceRow("hi hi hi", "yes", "no")], bert_tokenizer, max_length=8, max_prompt_length=4
    )
    # Left truncation keeps [CLS] and [SEP] around the prompt's last words.
    assert pair.prompt_ids == [cls, hi, hi, sep]
    assert pair.chosen_ids == [yes, sep]
    assert pair.rejected_ids == [no, sep]


def test_bert_conversation_prompt_is_a_transcript(bert_tokenizer):
    prompt = [{"role": "user", "content": "hi"}]
    expected = bert_tokenizer("user: hi\nassistant:")["input_ids"]
    assert encode_prompt(prompt, bert_tokenizer) == expected


# --- batching ----------------------------------------------------------------------------------


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths) / padded


def test_bucketed_batches_cover_every_index_once_and_keep_the_short_last_batch():
    lengths = [random.Random(1).randint(1, 100) for _ in range(103)]
    batches = length_bucketed_batches(lengths, 8, shuffle=True, seed=0, bucket_factor=4)
    assert sorted(i for batch in batches for i in batch) == list(range(103))
    assert sorted(len(batch) for batch in batches) == [7] + [8] * 12


def test_bucketed_batches_are_deterministic_under_a_seed():
    lengths = list(range(200))
    first = length_bucketed_batches(lengths, 4, shuffle=True, seed=3)
    assert length_bucketed_batches(lengths, 4, shuffle=True, seed=3) == first
    assert length_bucketed_batches(lengths, 4, shuffle=True, seed=4) != first
    unshuffled = length_bucketed_batches(lengths, 4, shuffle=False, seed=0)
    assert unshuffled == length_bucketed_batches(lengths, 4, shuffle=False, seed=99)


def test_bucketing_pads_much_less_than_random_batches_on_mixed_lengths():
    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(10, 30), rng.randint(200, 500)]) for _ in range(1000)]
    order = list(range(1000))
    rng.shuffle(order)
    random_batches = [order[i : i + 8] for i in range(0, 1000, 8)]
    bucketed = length_bucketed_batches(lengths, 8, shuffle=True, seed=0)
    assert padding_fraction(bucketed, lengths) < 0.05
    assert padding_fraction(random_batches, lengths) > 0.3


def test_bucketing_refuses_a_zero_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        length_bucketed_batches([1, 2], 0, shuffle=False, seed=0)


# A hand-made batch: pair 0 has prompt [5, 6], chosen [7, 2], rejected [8, 9, 2];
# pair 1 has prompt [5], chosen [7, 7, 7, 2], rejected [9, 2]. Longest: 1 + 4 = 5 tokens.
PAIRS = [
    EncodedPair([5, 6], [7, 2], [8, 9, 2], weight=1.0, margin=0.0, target=1.0, row=0),
    EncodedPair([5], [7, 7, 7, 2], [9, 2], weight=2.0, margin=0.5, target=0.5, row=1),
]


def test_collate_policy_pairs_stacks_chosen_then_rejected_right_padded():
    batch = collate_policy_pairs(PAIRS, pad_id=0)
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 2, 0],  # pair 0 chosen
        [5, 7, 7, 7, 2],  # pair 1 chosen
        [5, 6, 8, 9, 2],  # pair 0 rejected
        [5, 9, 2, 0, 0],  # pair 1 rejected
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
    ]
    # True exactly on the completion tokens in input_ids (targets, before the caller's shift).
    assert batch["loss_mask"].int().tolist() == [
        [0, 0, 1, 1, 0],
        [0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 1, 1, 0, 0],
    ]
    assert batch["input_ids"].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.bool
    assert batch["weight"].tolist() == [1.0, 2.0]
    assert batch["margin"].tolist() == [0.0, 0.5]
    assert batch["target"].tolist() == [1.0, 0.5]
    assert batch["num_tokens"] == 4 + 5 + 5 + 3


def test_collate_reward_pairs_has_the_same_sequences_without_a_loss_mask():
    policy = collate_policy_pairs(PAIRS, pad_id=0)
    reward = collate_reward_pairs(PAIRS, pad_id=0)
    assert set(reward) == {
        "input_ids",
        "attention_mask",
        "weight",
        "margin",
        "target",
        "num_tokens",
    }
    for key in reward:
        assert torch.equal(torch.as_tensor(reward[key]), torch.as_tensor(policy[key]))


def test_encoded_pairs_flow_into_a_batch(chat_tokenizer):
    rows = [PreferenceRow("hi", "yes", "no maybe"), PreferenceRow("w1 w2", "maybe", "no")]
    pairs = encode_pairs(rows, chat_tokenizer, max_length=16, max_prompt_length=8)
    batch = collate_policy_pairs(pairs, pad_id=chat_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (4, max(pair.length for pair in pairs))
    completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    for row, completion in enumerate(completions):
        assert batch["input_ids"][row][batch["loss_mask"][row]].tolist() == completion


def test_shifted_loss_mask_scores_exactly_the_completion_like_hf_labels():
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.engine.losses import sequence_logprobs, shift_for_next_token

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).eval()
    batch = collate_policy_pairs(PAIRS, pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps = sequence_logprobs(
            *shift_for_next_token(logits, batch["input_ids"], batch["loss_mask"])
        )
        for row in range(4):
            # HF's convention: labels = input_ids with -100 off the completion; it shifts inside.
            labels = batch["input_ids"][row : row + 1].masked_fill(~batch["loss_mask"][row], -100)
            out = model(
                input_ids=batch["input_ids"][row : row + 1],
                attention_mask=batch["attention_mask"][row : row + 1],
                labels=labels,
            )
            num_targets = int(batch["loss_mask"][row].sum())
            assert logps[row].item() == pytest.approx(-out.loss.item() * num_targets, abs=1e-4)
