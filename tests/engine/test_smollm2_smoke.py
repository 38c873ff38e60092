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
