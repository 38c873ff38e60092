"""The serving batcher on a tiny random Llama: requests that join a running batch write what
`generate` writes for them alone, stream in pieces that join to the whole, stop where asked,
can be cancelled, and use their own LoRA adapter beside rows of the base model."""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.engine.test_generate import tiny_llama
from tests.engine.tiny import tiny_tokenizer
from training.engine.batcher import (
    ChoiceEvent,
    ContinuousBatcher,
    Request,
    RequestError,
    SamplingParams,
)
from training.engine.config import GenerationConfig
from training.engine.generate import encode_prompts, generate
from training.engine.models import POLICY_ADAPTER, save_artifact

PROMPTS = ["w1 w2 w3", "yes", "w5 w6 w7 w8 w9 w10 w11 w12 w13", "good answer w20", "bad no w30"]


class Collector:
    """Gathers one request's events per choice, as a server's stream would."""

    def __init__(self) -> None:
        self.events: dict[int, list[ChoiceEvent]] = defaultdict(list)

    def __call__(self, event: ChoiceEvent) -> None:
        self.events[event.choice].append(event)

    def text(self, choice: int = 0) -> str:
        return "".join(e.text for e in self.events[choice])

    def finish(self, choice: int = 0) -> str | None:
        return self.events[choice][-1].finish_reason

    def tokens(self, choice: int = 0) -> int:
        return self.events[choice][-1].token_count


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def new_batcher(tokenizer, model=None, **kwargs) -> ContinuousBatcher:
    return ContinuousBatcher(model or tiny_llama(), tokenizer, precision="fp32", **kwargs)


def request(tokenizer, prompt: str, collector: Collector, **params) -> Request:
    n = params.pop("n", 1)
    adapter = params.pop("adapter", None)
    values = {"max_new_tokens": 10, "temperature": 1.0, "seed": 7} | params
    ids = encode_prompts(tokenizer, [prompt], 512)[0]
    return Request(ids, SamplingParams(**values), collector, n=n, adapter=adapter)


def alone(model, tokenizer, prompt: str, *, seed: int = 7, n: int = 1, max_new_tokens: int = 10):
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, samples_per_prompt=n,
        seed=seed, precision="fp32",
    )  # fmt: skip
    return generate(model, tokenizer, [prompt], config).samples[0]


def test_requests_joining_a_running_batch_write_what_they_write_alone(tokenizer):
    batcher = new_batcher(tokenizer)
    collectors = [Collector() for _ in PROMPTS]
    batcher.submit(request(tokenizer, PROMPTS[0], collectors[0], seed=1))
    batcher.step()
    batcher.step()  # the first request is decoding when the others arrive
    for i in range(1, len(PROMPTS)):
        batcher.submit(request(tokenizer, PROMPTS[i], collectors[i], seed=i + 1))
        batcher.step()
    batcher.run_until_idle()

    reference = tiny_llama()
    for i, prompt in enumerate(PROMPTS):
        expected = alone(reference, tokenizer, prompt, seed=i + 1)[0]
        assert collectors[i].text() == expected.text
        assert collectors[i].tokens() == expected.token_count
        assert collectors[i].finish() == ("stop" if expected.finished else "length")


def test_n_choices_are_the_samples_generate_gives_the_prompt(tokenizer):
    batcher = new_batcher(tokenizer)
    collector = Collector()
    batcher.submit(request(tokenizer, PROMPTS[2], collector, n=3, seed=11))
    batcher.run_until_idle()
    expected = alone(tiny_llama(), tokenizer, PROMPTS[2], seed=11, n=3)
    assert [collector.text(c) for c in range(3)] == [s.text for s in expected]
    assert len({collector.text(c) for c in range(3)}) > 1  # distinct streams per choice


def test_streamed_pieces_arrive_token_by_token_and_join_to_the_text(tokenizer):
    batcher = new_batcher(tokenizer)
    collector = Collector()
    batcher.submit(request(tokenizer, PROMPTS[0], collector, max_new_tokens=8, seed=3))
    batcher.run_until_idle()
    events = collector.events[0]
    assert len(events) >= 2  # not one piece at the end
    assert all(e.finish_reason is None for e in events[:-1])
    assert [e.token_count for e in events] == sorted(e.token_count for e in events)
    expected = alone(tiny_llama(), tokenizer, PROMPTS[0], seed=3, max_new_tokens=8)[0]
    assert collector.text() == expected.text


def test_a_stop_string_ends_the_choice_before_it(tokenizer):
    free = Collector()
    batcher = new_batcher(tokenizer)
    batcher.submit(request(tokenizer, PROMPTS[3], free, max_new_tokens=20, seed=5))
    batcher.run_until_idle()
    words = free.text().split()
    assert len(words) >= 3, "the seed must give a text long enough to cut"
    stop = words[2]
    cut = Collector()
    batcher.submit(request(tokenizer, PROMPTS[3], cut, max_new_tokens=20, seed=5, stop=(stop,)))
    batcher.run_until_idle()
    assert cut.finish() == "stop"
    assert cut.text() == free.text()[: free.text().index(stop)]
    assert stop not in cut.text()


def test_max_new_tokens_ends_with_length(tokenizer):
    collector = Collector()
    batcher = new_batcher(tokenizer)
    # Greedy on this tiny model does not end a turn within 3 tokens from this prompt.
    batcher.submit(request(tokenizer, PROMPTS[2], collector, max_new_tokens=3, temperature=0.0))
    batcher.run_until_idle()
    assert collector.finish() == "length"
    assert collector.tokens() == 3


def test_a_cancelled_request_ends_and_the_others_go_on(tokenizer):
    batcher = new_batcher(tokenizer)
    kept, dropped = Collector(), Collector()
    keep = request(tokenizer, PROMPTS[0], kept, max_new_tokens=12, seed=2)
    drop = request(tokenizer, PROMPTS[1], dropped, max_new_tokens=12, seed=3)
    batcher.submit(keep)
    batcher.submit(drop)
    batcher.step()
    drop.cancel()
    batcher.run_until_idle()
    assert dropped.finish() == "cancelled"
    assert dropped.tokens() < 12
    expected = alone(tiny_llama(), tokenizer, PROMPTS[0], seed=2, max_new_tokens=12)[0]
    assert kept.text() == expected.text


def test_more_requests_than_rows_wait_their_turn(tokenizer):
    batcher = new_batcher(tokenizer, max_rows=2)
    collectors = [Collector() for _ in range(6)]
    for i, collector in enumerate(collectors):
        batcher.submit(request(tokenizer, PROMPTS[i % len(PROMPTS)], collector, seed=i))
    rows_seen = []
    while batcher.busy:
        batcher.step()
        if batcher._batch is not None:
            rows_seen.append(len(batcher._batch.rows))
    assert max(rows_seen) <= 2
    reference = tiny_llama()
    for i, collector in enumerate(collectors):
        assert (
            collector.text()
            == alone(reference, tokenizer, PROMPTS[i % len(PROMPTS)], seed=i)[0].text
        )


def test_a_prompt_over_the_context_is_refused(tokenizer):
    batcher = new_batcher(tokenizer)
    long_prompt = " ".join(["w1"] * 250)
    with pytest.raises(RequestError, match="context"):
        batcher.submit(request(tokenizer, long_prompt, Collector(), max_new_tokens=10))


def save_adapter(tmp_path, tokenizer, seed: int, name: str):
    base = tiny_llama()
    torch.manual_seed(seed)  # after the base, which seeds itself: each adapter its own weights
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(base, lora).eval()
    folder = save_artifact(
        tmp_path / name, kind=POLICY_ADAPTER, model=policy, tokenizer=tokenizer,
        config=GenerationConfig(), base_model="tiny",
    )  # fmt: skip
    return folder, policy


def test_rows_of_different_adapters_share_a_batch(tmp_path, tokenizer):
    folder_a, policy_a = save_adapter(tmp_path, tokenizer, 1, "a")
    folder_b, policy_b = save_adapter(tmp_path, tokenizer, 2, "b")
    batcher = new_batcher(tokenizer)
    loaded = [batcher.load_adapter("v1", folder_a), batcher.load_adapter("v2", folder_b)]
    assert not any(event.is_set() for event in loaded)  # queued for the model's thread
    batcher.step()
    assert all(event.is_set() for event in loaded)
    assert set(batcher.adapters) == {"v1", "v2"}

    on_a, on_b, on_base = Collector(), Collector(), Collector()
    prompt = PROMPTS[0]
    batcher.submit(request(tokenizer, prompt, on_a, adapter="v1", temperature=0.0))
    batcher.submit(request(tokenizer, prompt, on_b, adapter="v2", temperature=0.0))
    batcher.submit(request(tokenizer, prompt, on_base, temperature=0.0))
    batcher.run_until_idle()

    def greedy(model) -> str:
        config = GenerationConfig(
            max_new_tokens=10, temperature=0.0, samples_per_prompt=1, precision="fp32"
        )
        return generate(model, tokenizer, [prompt], config).samples[0][0].text

    assert on_a.text() == greedy(policy_a)
    assert on_b.text() == greedy(policy_b)
    assert on_base.text() == greedy(tiny_llama())
    assert len({on_a.text(), on_b.text(), on_base.text()}) == 3  # each adapter is in its rows


def test_an_unloaded_adapter_goes_once_unused_and_its_requests_are_refused(tmp_path, tokenizer):
    folder_a, _ = save_adapter(tmp_path, tokenizer, 1, "a")
    folder_b, _ = save_adapter(tmp_path, tokenizer, 2, "b")
    batcher = new_batcher(tokenizer)
    batcher.load_adapter("v1", folder_a)
    batcher.load_adapter("v2", folder_b)
    running = Collector()
    batcher.submit(request(tokenizer, PROMPTS[0], running, adapter="v1", max_new_tokens=8))
    batcher.step()
    batcher.unload_adapter("v1")
    batcher.step()
    assert "v1" in batcher.adapters  # still decoding a row
    batcher.run_until_idle()
    assert running.finish() in {"stop", "length"}
    assert "v1" not in batcher.adapters
    refused = Collector()
    batcher.submit(request(tokenizer, PROMPTS[0], refused, adapter="v1"))
    batcher.run_until_idle()
    assert refused.finish() == "error"


def test_the_served_model_is_not_the_callers_copy_in_training_precision(tokenizer):
    # bf16 serving holds Linear weights in bf16 for good: pass the server its own copy.
    model = tiny_llama()
    original = copy.deepcopy(model.model.layers[0].self_attn.q_proj.weight.data)
    ContinuousBatcher(model, tokenizer, precision="bf16")
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert weight.dtype == torch.bfloat16
    assert torch.allclose(weight.float(), original, atol=1e-2)


def test_a_batch_that_runs_out_of_columns_is_rebuilt_and_writes_the_same(tokenizer, monkeypatch):
    from training.engine import batcher as batcher_module

    monkeypatch.setattr(batcher_module, "ROOM_STEP", 3)  # rebuilt every 3 tokens
    batcher = new_batcher(tokenizer)
    collectors = [Collector(), Collector()]
    batcher.submit(request(tokenizer, PROMPTS[0], collectors[0], max_new_tokens=14, seed=8))
    batcher.submit(request(tokenizer, PROMPTS[2], collectors[1], max_new_tokens=14, seed=9))
    capacities = set()
    while batcher.busy:
        batcher.step()
        if batcher._batch is not None:
            capacities.add(batcher._batch.capacity)
    assert len(capacities) > 1  # it grew
    reference = tiny_llama()
    for collector, prompt, seed in zip(collectors, [PROMPTS[0], PROMPTS[2]], [8, 9], strict=True):
        assert (
            collector.text()
            == alone(reference, tokenizer, prompt, seed=seed, max_new_tokens=14)[0].text
        )
