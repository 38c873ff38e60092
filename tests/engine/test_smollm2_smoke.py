"""Smoke test of the real packaged SmolLM2, prepared by `manage.py prepare_models` (make test
runs it first). Catches a break in the real loading path that tiny test models cannot."""

from __future__ import annotations

import pytest
from django.conf import settings

from training.engine.packaged import resolve_model_path

pytestmark = pytest.mark.slow
CACHE = settings.MODEL_CACHE_DIR


def test_prepared_smollm2_answers_a_chat_question_coherently():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_path("smollm2-135m-instruct", CACHE)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_prepared_minilm_embeds_similar_sentences_closer():
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model_path("all-minilm-l6-v2", CACHE)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    sentences = ["A man is eating food.", "A man eats some bread.", "The girl carries a baby."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similar, different = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert similar > different + 0.3


def test_dpo_on_smollm2_trains_an_adapter_that_changes_what_it_writes(tmp_path):
    """The real path end to end: a few DPO steps on SmolLM2, then greedy answers differ."""
    from training.engine.config import DPOConfig, GenerationConfig, LoraSettings
    from training.engine.data import PreferenceRow
    from training.engine.dpo import train_dpo
    from training.engine.generate import generate
    from training.engine.models import load_policy

    questions = ["Name a colour.", "Name a fruit.", "Name an animal.", "Name a country."]
    rows = [
        PreferenceRow(prompt=q, chosen="Banana banana banana!", rejected="Sure. " + q.lower())
        for q in questions
    ]
    config = DPOConfig(
        base_model="smollm2-135m-instruct",
        max_steps=3,
        batch_size=4,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        max_length=64,
        max_prompt_length=32,
        eval_fraction=0.0,
        lora=LoraSettings(r=8, alpha=16),
    )
    train_dpo(rows, config, tmp_path / "adapter", cache_dir=CACHE)

    greedy = GenerationConfig(max_new_tokens=8, temperature=0.0, samples_per_prompt=1)
    base, tokenizer = load_policy("smollm2-135m-instruct", cache_dir=CACHE)
    before = generate(base, tokenizer, ["Name a fruit."], greedy).samples[0][0].text
    tuned, _ = load_policy("smollm2-135m-instruct", adapter=tmp_path / "adapter", cache_dir=CACHE)
    after = generate(tuned, tokenizer, ["Name a fruit."], greedy).samples[0][0].text
    assert before != after

    # What the promotion gates measure, on the real model: the candidate answers as itself, the
    # parent (here the base: adapter off) as the base, and the pairs it trained on rank right.
    from training.engine.evaluate import evaluate_policy

    evaluation = evaluate_policy(
        base_model="smollm2-135m-instruct",
        candidate_adapter=tmp_path / "adapter",
        parent_adapter=None,
        prompts=["Name a fruit."],
        generation=greedy,
        heldout_rows=rows,
        cache_dir=CACHE,
    )
    assert (evaluation.pairs[0].candidate, evaluation.pairs[0].parent) == (after, before)
    assert evaluation.heldout_accuracy == 1.0 and evaluation.heldout_pairs == 4
    assert evaluation.kl > 0
