"""Tandem's sampling loop on a tiny random Llama: determinism, greedy parity with HF generate,
left padding, end of sequence, order of samples, cancellation, LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.engine.tiny import VOCAB, tiny_tokenizer
from training.engine import generate as gen
from training.engine.config import GenerationConfig
from training.engine.generate import encode_prompts, generate, sample_tokens

PROMPTS = [
    "w1 w2 w3",
    "yes",
    "w5 w6 w7 w8 w9 w10 w11 w12 w13",
    "good answer w20 w21",
    "bad no w30 w31 w32 w33 w34",
]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.3,  # peaked logits: greedy choices are not near-ties
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=3,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model():
    return tiny_llama()


def config(**overrides) -> GenerationConfig:
    values = dict(
        max_new_tokens=12, temperature=1.0, top_p=1.0, samples_per_prompt=1, precision="fp32"
    )
    return GenerationConfig(**{**values, **overrides})


def texts(result) -> list[list[str]]:
    return [[s.text for s in samples] for samples in result.samples]


def ids(result) -> list[list[list[int]]]:
    return [[s.token_ids for s in samples] for samples in result.samples]


def hf_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    [prompt_ids] = encode_prompts(tokenizer, [prompt], 512)
    output = model.generate(
        torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    return output[0, len(prompt_ids) :].tolist()


# --- sampling math ---------------------------------------------------------------------------


def test_inverse_cdf_sampling_follows_the_probabilities():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    grid = (torch.arange(1000) + 0.5) / 1000  # evenly spread uniforms
    picks = torch.stack(
        [sample_tokens(logits, u.view(1), temperature=1.0, top_k=0, top_p=1.0) for u in grid]
    )
    counts = torch.bincount(picks.flatten(), minlength=3).tolist()
    assert counts == [100, 600, 300]


def test_top_p_and_top_k_leave_out_the_unlikely_tail():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    grid = (torch.arange(200) + 0.5) / 200
    nucleus = {
        int(sample_tokens(logits, u.view(1), temperature=1.0, top_k=0, top_p=0.7)) for u in grid
    }
    top2 = {
        int(sample_tokens(logits, u.view(1), temperature=1.0, top_k=2, top_p=1.0)) for u in grid
    }
    assert nucleus == {0, 1}  # 0.5 + 0.3 reaches 0.7; 0.15 and 0.05 are cut
    assert top2 == {0, 1}


def test_a_wide_nucleus_falls_back_to_sorting_the_whole_vocabulary():
    logits = torch.zeros(2, 1000)  # uniform: the nucleus is far wider than the 256-token head
    picks = {
        int(sample_tokens(logits, torch.tensor([u, u]), temperature=1.0, top_k=0, top_p=0.99)[0])
        for u in torch.linspace(0, 0.999, 300).tolist()
    }
    assert len(picks) > 256


def reference_nucleus(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Sort-based top-k then top-p, as HF's warpers do it: [B, V] -> kept mask [B, V]."""
    values, order = probs.sort(dim=-1, descending=True)
    if top_k:
        values[:, top_k:] = 0
        values = values / values.sum(-1, keepdim=True)
    keep_sorted = (values.cumsum(-1) - values) < top_p
    keep_sorted &= values > 0
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (0, 0.999), (20, 1.0), (50, 0.8), (0, 0.3)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])  # flat to peaked: slices of every width
def test_nucleus_threshold_keeps_what_a_full_sort_keeps(top_k, top_p, scale):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(6, 10_000) * scale, dim=-1)
    threshold = gen.nucleus_threshold(probs, top_k, top_p)
    assert torch.equal(probs >= threshold, reference_nucleus(probs, top_k, top_p))


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    tokens = sample_tokens(logits, torch.rand(2), temperature=0.0, top_k=0, top_p=0.9)
    assert tokens.tolist() == [1, 0]


# --- the loop --------------------------------------------------------------------------------


def test_same_seed_same_text_other_seed_other_text(model, tokenizer):
    settings = dict(samples_per_prompt=2, top_k=20, top_p=0.9, batch_size=4)
    first = generate(model, tokenizer, PROMPTS, config(seed=1, **settings))
    again = generate(model, tokenizer, PROMPTS, config(seed=1, **settings))
    other = generate(model, tokenizer, PROMPTS, config(seed=2, **settings))
    assert texts(first) == texts(again)
    assert texts(first) != texts(other)


def test_greedy_matches_hf_generate_for_each_prompt_alone(model, tokenizer):
    for prompt in PROMPTS:
        ours = generate(model, tokenizer, [prompt], config(temperature=0.0))
        assert ours.samples[0][0].token_ids == hf_greedy(model, tokenizer, prompt, 12)


def test_left_padding_in_a_mixed_batch_does_not_change_greedy_output(model, tokenizer):
    alone = [generate(model, tokenizer, [p], config(temperature=0.0)) for p in PROMPTS]
    together = generate(model, tokenizer, PROMPTS, config(temperature=0.0, batch_size=5))
    assert ids(together) == [ids(result)[0] for result in alone]


def test_a_row_keeps_its_samples_whatever_batch_it_lands_in(model, tokenizer):
    # Each row's random stream is seeded from (seed, prompt index, sample index), not its batch.
    results = [
        generate(model, tokenizer, PROMPTS, config(samples_per_prompt=2, batch_size=size))
        for size in (1, 3, 16)
    ]
    assert ids(results[0]) == ids(results[1]) == ids(results[2])


def test_samples_per_prompt_come_back_in_the_original_prompt_order(model, tokenizer):
    result = generate(model, tokenizer, PROMPTS, config(samples_per_prompt=3, batch_size=4))
    assert [len(samples) for samples in result.samples] == [3] * len(PROMPTS)
    # The first prompt's samples are those of running it alone: order is by prompt, then sample.
    alone = generate(model, tokenizer, PROMPTS[:1], config(samples_per_prompt=3))
    assert ids(result)[0] == ids(alone)[0]
    for samples in result.samples:
        assert len({tuple(s.token_ids) for s in samples}) > 1  # samples differ from each other
    # Prompt i's samples are what a single prompt at index i gets.
    shuffled = [PROMPTS[3], PROMPTS[1], PROMPTS[0]]
    again = generate(model, tokenizer, shuffled, config(samples_per_prompt=3, batch_size=2))
    assert ids(again)[1] == ids(result)[1]


def test_rows_stop_at_end_of_sequence_and_count_no_padding(model, tokenizer):
    # Make the token greedy decoding writes 4th for the long prompt an extra end-of-sequence id.
    prompt = PROMPTS[2]
    greedy = generate(model, tokenizer, [prompt], config(temperature=0.0)).samples[0][0]
    stop = greedy.token_ids[3]
    first_stop = greedy.token_ids.index(stop)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]

    result = generate(model, tokenizer, PROMPTS, config(temperature=0.0, batch_size=5))
    sample = result.samples[2][0]
    assert sample.finished
    assert sample.token_ids == greedy.token_ids[: first_stop + 1]
    for samples in result.samples:
        s = samples[0]
        assert s.token_count == len(s.token_ids) <= 12
        assert tokenizer.pad_token_id not in s.token_ids
        ends = [i for i, t in enumerate(s.token_ids) if t in (stop, tokenizer.eos_token_id)]
        assert ends == ([len(s.token_ids) - 1] if s.finished else [])  # nothing after the stop
        assert s.finished or s.token_count == 12
    assert result.new_tokens == sum(s[0].token_count for s in result.samples)


def test_rows_cut_at_max_new_tokens_are_not_finished(model, tokenizer):
    result = generate(model, tokenizer, PROMPTS, config(temperature=0.0, max_new_tokens=5))
    samples = [s[0] for s in result.samples]
    for s in samples:
        assert s.finished == (s.token_ids[-1] == tokenizer.eos_token_id)
        assert s.finished or s.token_count == 5
    assert not all(s.finished for s in samples)


def test_dropping_finished_rows_does_not_change_the_samples(model, tokenizer, monkeypatch):
    model.generation_config.eos_token_id = [2, 20, 30, 40]  # common enough to end rows early
    settings = config(samples_per_prompt=3, batch_size=16, max_new_tokens=20)
    monkeypatch.setattr(gen, "DROP_FINISHED_FRACTION", 0.0)  # drop as soon as one finishes
    dropping = generate(model, tokenizer, PROMPTS, settings)
    monkeypatch.setattr(gen, "DROP_FINISHED_FRACTION", 2.0)  # never drop
    keeping = generate(model, tokenizer, PROMPTS, settings)
    assert any(s.finished for samples in dropping.samples for s in samples)
    assert ids(dropping) == ids(keeping)


def test_prompts_are_truncated_from_the_left(model, tokenizer):
    result = generate(model, tokenizer, [PROMPTS[2]], config(max_prompt_length=4))
    [kept] = encode_prompts(tokenizer, [PROMPTS[2]], 4)
    assert result.prompt_tokens == 4
    # The chat template ends with the assistant header: that is what the answer follows.
    assert tokenizer.decode(kept) == tokenizer.decode(
        encode_prompts(tokenizer, [PROMPTS[2]], 512)[0][-4:]
    )


def test_chat_messages_and_plain_text_render_the_same(model, tokenizer):
    as_text = generate(model, tokenizer, ["w1 w2"], config())
    as_messages = generate(model, tokenizer, [[{"role": "user", "content": "w1 w2"}]], config())
    assert texts(as_text) == texts(as_messages)


def test_should_stop_cancels_between_batches_and_progress_is_reported(model, tokenizer):
    progress: list[tuple[int, int]] = []
    result = generate(
        model, tokenizer, PROMPTS, config(samples_per_prompt=2, batch_size=4),
        on_batch=lambda done, total: progress.append((done, total)),
        should_stop=lambda: len(progress) >= 1,
    )  # fmt: skip
    assert progress == [(4, 10)]
    assert result.cancelled
    assert sum(len(samples) for samples in result.samples) == 4

    finished = generate(model, tokenizer, PROMPTS, config(samples_per_prompt=2, batch_size=4))
    assert not finished.cancelled


def test_reports_timings(model, tokenizer):
    result = generate(model, tokenizer, PROMPTS, config(samples_per_prompt=2))
    assert result.new_tokens == sum(s.token_count for ss in result.samples for s in ss) > 0
    assert result.prompt_tokens == sum(len(i) for i in encode_prompts(tokenizer, PROMPTS, 512))
    assert result.seconds > 0 and result.tokens_per_second > 0


def test_bf16_generation_leaves_the_weights_as_they_were(model, tokenizer):
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    result = generate(model, tokenizer, PROMPTS, config(precision="bf16"))
    assert all(len(s[0].token_ids) > 0 for s in result.samples)
    assert model.training
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p, before[name]), name


def test_works_with_a_lora_adapter(model, tokenizer):
    from peft import LoraConfig, get_peft_model

    base_greedy = generate(model, tokenizer, PROMPTS, config(temperature=0.0))
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(model, lora).eval()

    ours = generate(policy, tokenizer, PROMPTS, config(temperature=0.0, batch_size=5))
    assert ids(ours) != ids(base_greedy)  # the adapter is in the forward pass
    for prompt, samples in zip(PROMPTS, ours.samples, strict=True):
        assert samples[0].token_ids == hf_greedy(policy, tokenizer, prompt, 12)
    sampled = generate(policy, tokenizer, PROMPTS, config(precision="bf16", samples_per_prompt=2))
    assert all(len(s) == 2 for s in sampled.samples)


def test_progress_moves_within_a_long_batch(model, tokenizer, monkeypatch):
    monkeypatch.setattr(gen, "PROGRESS_EVERY_STEPS", 2)
    steps: list[tuple[int, int]] = []
    batches: list[tuple[int, int]] = []
    generate(
        model, tokenizer, PROMPTS[:2], config(max_new_tokens=12, batch_size=2),
        on_batch=lambda done, total: batches.append((done, total)),
        on_step=lambda done, total: steps.append((done, total)),
    )  # fmt: skip
    assert batches == [(2, 2)]
    assert steps, "this seed writes more than two tokens, so a step is reported"
    assert all(total == 2 and 0 <= done < 2 for done, total in steps)
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)
