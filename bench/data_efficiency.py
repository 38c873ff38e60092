"""Every judgment counts: reward-model accuracy against labels bought, by how pairs are chosen
and how votes become labels, with simulated annotators and a fixed gold judge.

    .venv/bin/python bench/data_efficiency.py [--seeds 3] [--plot docs/data-efficiency.png]
        [--backbone all-minilm-l6-v2] [--published-only] [--threads 1]

The world: alpaca_eval's 789 instructions whose two published answers differ
(`../shared/data/alpaca_eval_pairs.jsonl`), each with k = 4 answers: the two published ones
(text-davinci-003, alpaca-7b) and two that SmolLM2-135M-Instruct, the loop's base policy,
writes with the project's sampling defaults (Tandem's engine; cached under var/).
A prompt offers six pairs.

The gold judge: a Bradley-Terry reward head fitted on every decided GPT-4 preference of the
published pairs, over features of the reward model's own backbone (SmolLM2-135M-Instruct,
frozen: the last token's final hidden state of prompt + answer, encoded exactly as the reward
model encodes, 256 tokens with a 128-token prompt), standardized. It stays fixed. Simulated
annotators draw each vote from its probability sigmoid(r_a - r_b). A quarter of the prompts is
held out; every pair of theirs, labelled by the gold judge's side, scores each proxy.

Proxies are reward heads on the same frozen features fitted on the labels bought, not LoRA
fine-tunes: a few hundred fits per run take seconds where as many SmolLM2 trainings would take
days on 2 cores (active-learning studies of reward models such as BAL-PM measure on frozen-LLM
features for the same reason). The strategies are Tandem's own code: `training.pairing.
choose_pairs` chooses (random; uncertainty: each prompt's closest-reward pair under the current
proxy, served by entropy, 20% random share; disagreement: the pair with the most expected
information about 8 bootstrap heads fitted as `training.engine.ensemble` fits them beside a
reward model, with the same random share; information: the round's pairs picked one at a time
across prompts, each the one whose label would most reduce the doubt about the other pairs'
margins under the proxy's Laplace posterior, given those picked before it, the posterior fitted
as `training.engine.ensemble.HeadPosterior` is fitted beside a reward model, with the same
random share; and information with no random share, `pairing.random_share = 0`),
`annotate.crowd.crowd_fit` turns votes to labels.

Settings, over `--seeds` seeds (held-out split, panel and votes re-drawn each):
- random vs uncertainty vs disagreement vs information: one careful vote a pair, labels bought
  in rounds of 64, the proxy refitted and measured after each round (as the loop retrains its
  reward model); the labels a strategy needs to reach random's 512-label accuracy are read
  linearly between the rounds.
- majority vote vs the crowd model: three votes a pair from a panel of ten, three of them bad
  (two vote at random, one against their judgment); a clean panel of ten for reference.
- strength margins: careful annotators also say how strong (the gold margin's tercile),
  trained with RewardConfig's default margins (0, 0.5, 1) or none.
Printed as tables with the targets; saved as a plot (`--plot`).

A lighter world for machines without fast bf16 (SmolLM2's features of 3,156 answers take hours
on one fp32 core): `--backbone all-minilm-l6-v2` takes the features a MiniLM reward model's head
reads (its pooled [CLS]), and `--published-only` keeps the two published answers (k = 2: one
pair a prompt, so the strategies choose which prompts to ask about, not which pair).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_pairs.jsonl"
CACHE = ROOT / "var" / "bench-data-efficiency"
BACKBONE = "smollm2-135m-instruct"
ROUND = 64  # labels bought per round
BUDGETS = tuple(range(ROUND, 513, ROUND))  # measured after every round
L2 = 1e-2
RANDOM_SHARE = 0.2
ENSEMBLE_HEADS = 8  # PairingSettings' default
# How pairs are chosen: a name -> (PairingSettings.strategy, its random_share).
CHOICES = {
    "random": ("random", RANDOM_SHARE),
    "uncertainty": ("uncertainty", RANDOM_SHARE),
    "disagreement": ("disagreement", RANDOM_SHARE),
    "information": ("information", RANDOM_SHARE),
    "information, no random share": ("information", 0.0),
}
STRENGTH_MARGINS = {"slight": 0.0, "clear": 0.5, "strong": 1.0}  # RewardConfig's defaults


@dataclass(frozen=True)
class Item:
    prompt: str
    answers: tuple[str, ...]  # published a, published b, then the policy's
    gpt4_prefers_first: bool | None  # between the published two; None: no preference


def read_items(path: Path) -> list[Item]:
    items = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["output_1"].strip() == row["output_2"].strip():
                continue  # one text twice: Tandem leaves such pairs out
            preference = {1: True, 2: False}.get(int(row["preference"]))
            items.append(Item(row["instruction"], (row["output_1"], row["output_2"]), preference))
    return items


def _digest(values: list[str]) -> str:
    return hashlib.sha256("\x00".join(values).encode()).hexdigest()[:16]


# --- k answers a prompt: the published two and the policy's own -----------------------------


POLICY_ANSWERS = 2


def policy_answers(prompts: list[str]) -> list[list[str]]:
    """Two answers a prompt by SmolLM2-135M-Instruct with the project's sampling defaults
    (128 tokens, temperature 0.8, top-p 0.95), by Tandem's engine; cached."""
    cached = CACHE / f"answers-{_digest(prompts)}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from django.conf import settings

    from training.engine.config import GenerationConfig
    from training.engine.generate import generate
    from training.engine.models import load_policy

    model, tokenizer = load_policy(BACKBONE, cache_dir=settings.MODEL_CACHE_DIR)
    config = GenerationConfig(samples_per_prompt=POLICY_ANSWERS, batch_size=32, seed=11)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 320 < 32:
            print(f"  answers {done}/{total} ({time.monotonic() - started:.0f} s)", flush=True)

    result = generate(
        model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], config,
        on_batch=progress,
    )  # fmt: skip
    answers = [[sample.text for sample in samples] for samples in result.samples]
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(answers))
    return answers


# --- features: the frozen backbone, encoded as the reward model encodes ---------------------


def as_messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def encoded_answers(
    prompts: list[str] | list[str | list[dict[str, str]]], answers: list[str], tokenizer
) -> list[list[int]]:
    """Each (prompt, answer) as token ids, cut to RewardConfig's lengths as the reward model is;
    a prompt is an instruction or a conversation's messages."""
    from training.engine.config import RewardConfig
    from training.engine.data import PreferenceRow, encode_pairs

    defaults = RewardConfig()
    rows = [PreferenceRow(prompt=as_messages(p), chosen=a, rejected=a)
            for p, a in zip(prompts, answers, strict=True)]  # fmt: skip
    encoded = encode_pairs(
        rows, tokenizer, max_length=defaults.max_length,
        max_prompt_length=defaults.max_prompt_length,
    )  # fmt: skip
    return [e.prompt_ids + e.chosen_ids for e in encoded]


def features(prompts: list[str], answers: list[str], backbone: str = BACKBONE) -> torch.Tensor:
    """(N, d): the last token's final hidden state of each (prompt, answer); cached. Another
    backbone gives what its reward model's head would read (an encoder's pooled [CLS])."""
    cached = CACHE / f"features-{backbone}-{_digest(prompts + answers)}.pt"
    if cached.exists():
        return torch.load(cached)
    if backbone != BACKBONE:
        out = head_input_features(prompts, answers, backbone)
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(out, cached)
        return out
    from django.conf import settings

    from training.engine.models import load_causal_lm, load_tokenizer
    from training.engine.precision import autocast

    tokenizer = load_tokenizer(BACKBONE, cache_dir=settings.MODEL_CACHE_DIR)
    model = load_causal_lm(BACKBONE, cache_dir=settings.MODEL_CACHE_DIR).eval()
    sequences = encoded_answers(prompts, answers, tokenizer)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = torch.zeros(len(sequences), model.config.hidden_size)
    started = time.monotonic()
    with torch.inference_mode(), autocast("auto", torch.device("cpu")):
        for start in range(0, len(order), 16):
            batch = order[start : start + 16]
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                ids[row, : len(sequences[index])] = torch.tensor(sequences[index])
                mask[row, : len(sequences[index])] = 1
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            out[batch] = hidden[torch.arange(len(batch)), mask.sum(1) - 1].float()
            if (start + len(batch)) % 640 < 16:
                print(f"  features {start + len(batch)}/{len(order)} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(out, cached)
    return out


def head_input_features(prompts: list[str], answers: list[str], backbone: str) -> torch.Tensor:
    """(N, d): the input of a fresh reward model's head on `backbone`, encoded as it encodes."""
    return HeadInputs(backbone)(prompts, answers, log_every=640)


class HeadInputs:
    """A fresh reward model on `backbone`, loaded once; called, the input of its head for each
    (prompt, answer): what its one-output head reads, so a linear head on these is a reward
    model whose backbone never trained."""

    def __init__(self, backbone: str) -> None:
        from django.conf import settings

        from training.engine.config import LoraSettings
        from training.engine.models import load_reward_backbone

        self.model, self.tokenizer = load_reward_backbone(
            backbone, use_lora=False, lora=LoraSettings(), cache_dir=settings.MODEL_CACHE_DIR,
            device=torch.device("cpu"),
        )  # fmt: skip
        self.model.eval()

    def __call__(
        self, prompts: list, answers: list[str], log_every: int | None = None
    ) -> torch.Tensor:
        from training.engine.models import reward_head_inputs, reward_scores
        from training.engine.ppo import right_pad

        sequences = encoded_answers(prompts, answers, self.tokenizer)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out: torch.Tensor | None = None
        started = time.monotonic()
        with torch.inference_mode(), reward_head_inputs(self.model) as captured:
            for start in range(0, len(order), 32):
                batch = order[start : start + 32]
                ids, mask = right_pad([sequences[i] for i in batch], self.tokenizer.pad_token_id)
                captured.clear()
                reward_scores(self.model, ids, mask)
                if out is None:
                    out = torch.zeros(len(sequences), captured[-1].shape[1])
                out[batch] = captured[-1]
                if log_every and (start + len(batch)) % log_every < 32:
                    print(f"  features {start + len(batch)}/{len(order)} "
                          f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
        assert out is not None
        return out


# --- Bradley-Terry heads --------------------------------------------------------------------


def fit_head(
    diff: torch.Tensor,  # (n, d): features of the labelled winner minus the loser's
    weight: torch.Tensor | None = None,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    """theta minimising mean(w * -log sigmoid(diff @ theta - margin)) + L2 |theta|^2."""
    n, d = diff.shape
    weight = torch.ones(n) if weight is None else weight
    margin = torch.zeros(n) if margin is None else margin
    theta = torch.zeros(d, requires_grad=True)
    optimiser = torch.optim.LBFGS([theta], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (weight * torch.nn.functional.softplus(-(diff @ theta - margin))).mean()
        loss = loss + L2 * theta.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return theta.detach()


# --- the world: answers, the gold judge, simulated annotators -------------------------------


@dataclass(frozen=True)
class Annotator:
    kind: str  # careful | random | flipping

    def says_first(self, p_first: float, rng: random.Random) -> bool:
        if self.kind == "random":
            return rng.random() < 0.5
        vote = rng.random() < p_first
        return not vote if self.kind == "flipping" else vote


CAREFUL = Annotator("careful")
CLEAN_PANEL = [CAREFUL] * 10
BAD_PANEL = [CAREFUL] * 7 + [Annotator("random")] * 2 + [Annotator("flipping")]

Pair = tuple[int, int]  # two answer ids, the lower first


@dataclass
class World:
    z: torch.Tensor  # (answers, d) standardized features
    gold: torch.Tensor  # (answers,) the gold judge's reward
    answers_of: dict[int, list[int]]  # prompt -> its answer ids (distinct texts)
    pool: list[int]  # training prompts
    heldout_pairs: list[Pair]

    def p_first(self, pair: Pair) -> float:
        return 1 / (1 + math.exp(-float(self.gold[pair[0]] - self.gold[pair[1]])))

    def diff(self, pairs: list[Pair], first_won: list[bool]) -> torch.Tensor:
        winners = [a if won else b for (a, b), won in zip(pairs, first_won, strict=True)]
        losers = [b if won else a for (a, b), won in zip(pairs, first_won, strict=True)]
        return self.z[torch.tensor(winners)] - self.z[torch.tensor(losers)]

    def heldout_accuracy(self, theta: torch.Tensor) -> float:
        a = torch.tensor([p[0] for p in self.heldout_pairs])
        b = torch.tensor([p[1] for p in self.heldout_pairs])
        proxy = (self.z[a] - self.z[b]) @ theta > 0
        return float((proxy == (self.gold[a] > self.gold[b])).float().mean())


def build_world(
    z: torch.Tensor, gold: torch.Tensor, texts: list[list[str]], first_id: list[int], seed: int
) -> World:
    answers_of = {}
    for prompt, answers in enumerate(texts):
        seen: dict[str, int] = {}
        for offset, text in enumerate(answers):
            seen.setdefault(text.strip(), first_id[prompt] + offset)
        answers_of[prompt] = sorted(seen.values())
    prompts = list(range(len(texts)))
    random.Random(seed).shuffle(prompts)
    cut = len(prompts) // 4
    heldout_pairs = [
        pair
        for prompt in prompts[:cut]
        for pair in itertools.combinations(answers_of[prompt], 2)
        if float(gold[pair[0]]) != float(gold[pair[1]])
    ]
    return World(z, gold, answers_of, sorted(prompts[cut:]), heldout_pairs)


# --- buying labels round by round, as the loop does -----------------------------------------


def buy_rounds(
    world: World, strategy: str, rng: random.Random, random_share: float = RANDOM_SHARE
) -> dict[int, float]:
    """Rounds of ROUND labels, one careful vote each, the proxy refitted after each round;
    the pairs chosen by Tandem's `choose_pairs` under the proxy's rewards."""
    from training.engine.ensemble import HeadPosterior, fit_bootstrap_heads, head_scores
    from training.pairing import Answer, PosteriorOfAnswers, choose_pairs
    from training.project_settings import PairingSettings

    settings = PairingSettings(strategy=strategy, random_share=random_share)  # type: ignore[arg-type]
    bought: list[Pair] = []
    votes: list[bool] = []
    theta: torch.Tensor | None = None
    heads: dict[int, list[float]] | None = None
    posterior: PosteriorOfAnswers | None = None
    result = {}
    while len(bought) < max(BUDGETS):
        taken = set(bought)
        open_answers = {  # prompts with a pair not bought yet
            prompt: [Answer(i, str(i)) for i in world.answers_of[prompt]]
            for prompt in world.pool
            if not taken.issuperset(itertools.combinations(world.answers_of[prompt], 2))
        }
        scores = None if theta is None else dict(enumerate((world.z @ theta).tolist()))
        planned = choose_pairs(
            open_answers, settings=settings, scores=scores, reward_version=None, heldout=set(),
            seed=rng.randrange(2**31), head_scores=heads, posterior=posterior,
        )  # fmt: skip
        if scores is None or strategy == "random":
            rng.shuffle(planned)
        else:
            planned.sort(key=lambda pair: -pair.priority)  # most uncertain first
        chosen = [(p.response_a_id, p.response_b_id) for p in planned]
        fresh = [pair for pair in chosen if pair not in taken][:ROUND]
        if len(fresh) < ROUND:  # every prompt's choice bought already: top up at random
            spare = [pair for pair in random_pairs(world, None, rng) if pair not in taken]
            fresh += [pair for pair in spare if pair not in fresh][: ROUND - len(fresh)]
        bought += fresh
        votes += [CAREFUL.says_first(world.p_first(pair), rng) for pair in fresh]
        diff = world.diff(bought, votes)
        theta = fit_head(diff)
        if strategy == "disagreement":  # the reward model's bootstrap heads, as the loop fits them
            fitted = fit_bootstrap_heads(
                diff, torch.zeros_like(diff), torch.ones(len(diff)), heads=ENSEMBLE_HEADS,
                seed=rng.randrange(2**31), start=theta,
            )  # fmt: skip
            heads = dict(enumerate(head_scores(world.z, fitted).tolist()))
        if strategy == "information":  # the head's Laplace posterior, as the loop fits it
            fit = HeadPosterior.fit(diff, torch.zeros_like(diff), torch.ones(len(diff)), at=theta)
            posterior = PosteriorOfAnswers(range(len(world.z)), fit.answers(world.z))
        if len(bought) in BUDGETS:
            result[len(bought)] = world.heldout_accuracy(theta)
    return result


def random_pairs(world: World, count: int | None, rng: random.Random) -> list[Pair]:
    """`count` distinct pairs of training prompts at random (None: all of them, shuffled)."""
    every = [pair for p in world.pool for pair in itertools.combinations(world.answers_of[p], 2)]
    return rng.sample(every, len(every) if count is None else count)


def labels_from_votes(
    world: World, pairs: list[Pair], panel: list[Annotator], resolution: str, rng: random.Random
) -> tuple[list[Pair], list[bool], list[float]]:
    """Three votes a pair from distinct panel members; labels and weights as Tandem makes them."""
    from annotate.crowd import Vote, crowd_fit

    ballots = [
        Vote(index, member, panel[member].says_first(world.p_first(pair), rng))
        for index, pair in enumerate(pairs)
        for member in rng.sample(range(len(panel)), 3)
    ]
    if resolution == "crowd":
        posterior = crowd_fit(ballots).posterior_a
        kept = [i for i in range(len(pairs)) if posterior[i] != 0.5]
        return ([pairs[i] for i in kept], [posterior[i] > 0.5 for i in kept],
                [max(posterior[i], 1 - posterior[i]) for i in kept])  # fmt: skip
    for_first = [0] * len(pairs)
    for ballot in ballots:
        for_first[ballot.pair] += ballot.says_a
    return pairs, [n >= 2 for n in for_first], [max(n, 3 - n) / 3 for n in for_first]


def vote_rules(world: World, rng: random.Random) -> dict[str, dict[int, float]]:
    pairs = random_pairs(world, max(BUDGETS), rng)
    base = rng.randrange(2**31)
    out: dict[str, dict[int, float]] = {}
    for name, panel, resolution in (
        ("clean panel, majority", CLEAN_PANEL, "majority"),
        ("30% bad, majority", BAD_PANEL, "majority"),
        ("30% bad, crowd model", BAD_PANEL, "crowd"),
    ):
        out[name] = {}
        for budget in BUDGETS:
            # The same draws at a budget for every rule: the bad panel casts the very same
            # votes for majority vote and for the crowd model.
            kept, first_won, weights = labels_from_votes(
                world, pairs[:budget], panel, resolution, random.Random(base + budget)
            )
            theta = fit_head(world.diff(kept, first_won), torch.tensor(weights))
            out[name][budget] = world.heldout_accuracy(theta)
    return out


def strength_effect(world: World, rng: random.Random) -> dict[str, float]:
    """At the largest budget: accuracy, and the held-out reward gap on strong pairs (the gold
    margin's top tercile), trained with strength margins and without."""
    budget = max(BUDGETS)
    pairs = random_pairs(world, budget, rng)

    def gold_gap(pair: Pair) -> float:
        return abs(float(world.gold[pair[0]] - world.gold[pair[1]]))

    low, high = torch.quantile(
        torch.tensor([gold_gap(p) for p in pairs]), torch.tensor([1 / 3, 2 / 3])
    )

    def strength(pair: Pair) -> str:
        gap = gold_gap(pair)
        return "slight" if gap < low else "clear" if gap < high else "strong"

    votes = [CAREFUL.says_first(world.p_first(pair), rng) for pair in pairs]
    diff = world.diff(pairs, votes)
    margins = torch.tensor([STRENGTH_MARGINS[strength(pair)] for pair in pairs])
    strong = [pair for pair in world.heldout_pairs if strength(pair) == "strong"]
    winners = [a if world.gold[a] > world.gold[b] else b for a, b in strong]
    losers = [b if world.gold[a] > world.gold[b] else a for a, b in strong]
    strong_diff = world.z[torch.tensor(winners)] - world.z[torch.tensor(losers)]
    out = {}
    for name, margin in (("no margins", None), ("margins", margins)):
        theta = fit_head(diff, margin=margin)
        out[f"{name}: accuracy"] = world.heldout_accuracy(theta)
        out[f"{name}: reward gap on strong pairs"] = float((strong_diff @ theta).mean())
    return out


# --- the run --------------------------------------------------------------------------------


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("BROKER_DIR", str(CACHE / "broker"))
    os.environ.setdefault("MODEL_CACHE_DIR", str(ROOT / "var" / "models"))
    import django

    django.setup()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "data-efficiency.png")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 beside a job)")
    parser.add_argument(
        "--backbone", default=BACKBONE,
        help="the features' backbone, e.g. all-minilm-l6-v2 (a tenth of SmolLM2's compute)",
    )  # fmt: skip
    parser.add_argument(
        "--published-only", action="store_true",
        help="k = 2: the two published answers only, no SmolLM2 answers to generate",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup_django()

    items = read_items(args.data)
    if args.published_only:
        written: list[list[str]] = [[] for _ in items]
    else:
        written = policy_answers([item.prompt for item in items])
    texts = [list(item.answers) + answers for item, answers in zip(items, written, strict=True)]
    first_id = list(itertools.accumulate((len(t) for t in texts), initial=0))[:-1]
    flat_prompts = [item.prompt for item, t in zip(items, texts, strict=True) for _ in t]
    x = features(flat_prompts, [answer for t in texts for answer in t], args.backbone)
    print(f"world: {args.backbone} features, k = {len(texts[0])} answers a prompt")
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)

    decided = [i for i, item in enumerate(items) if item.gpt4_prefers_first is not None]
    winners = [first_id[i] + (0 if items[i].gpt4_prefers_first else 1) for i in decided]
    losers = [first_id[i] + (1 if items[i].gpt4_prefers_first else 0) for i in decided]
    gold_theta = fit_head(z[torch.tensor(winners)] - z[torch.tensor(losers)])
    gold = z @ gold_theta
    agree = mean([float(gold[w] > gold[lo]) for w, lo in zip(winners, losers, strict=True)])
    print(f"{len(items)} prompts, {len(x)} answers; the gold judge agrees with GPT-4 on {agree:.1%}"
          f" of its {len(decided)} decided pairs")  # fmt: skip
    if not args.published_only:
        published = mean(
            [float(gold[first_id[i]] > gold[first_id[i] + 2]) for i in range(len(items))]
        )
        print(f"it prefers text-davinci-003 to SmolLM2 on {published:.0%} of prompts")
    print()

    curves: dict[str, list[dict[int, float]]] = {}
    strengths: list[dict[str, float]] = []
    started = time.monotonic()
    for seed in range(args.seeds):
        world = build_world(z, gold, texts, first_id, seed)
        for name, (strategy, share) in CHOICES.items():
            curve = buy_rounds(world, strategy, random.Random(seed), random_share=share)
            curves.setdefault(name, []).append(curve)
        for name, curve in vote_rules(world, random.Random(seed)).items():
            curves.setdefault(name, []).append(curve)
        strengths.append(strength_effect(world, random.Random(seed)))
    averaged = {name: {b: mean([run[b] for run in runs]) for b in BUDGETS}
                for name, runs in curves.items()}  # fmt: skip
    spread = {name: {b: max(r[b] for r in runs) - min(r[b] for r in runs) for b in BUDGETS}
              for name, runs in curves.items()}  # fmt: skip
    print(f"held-out accuracy against the gold judge, mean of {args.seeds} seeds "
          f"(max - min across seeds in brackets), by labels bought "
          f"({time.monotonic() - started:.0f} s of fits):")  # fmt: skip
    print(f"{'setting':30s}" + "".join(f"{b:>14d}" for b in BUDGETS))
    for name, curve in averaged.items():
        print(f"{name:30s}" + "".join(
            f"{curve[b]:8.3f} ({spread[name][b]:.2f})" for b in BUDGETS))  # fmt: skip
    print()
    report_targets(averaged, strengths)
    plot(averaged, args.plot)


def labels_to_reach(curve: dict[int, float], goal: float) -> float | None:
    """The labels a curve needs to reach `goal`, read linearly between the budgets measured
    (accuracy rises about linearly over one round); None if it never does."""
    budgets = sorted(curve)
    if curve[budgets[0]] >= goal:
        return float(budgets[0])
    for before, after in itertools.pairwise(budgets):
        if curve[after] >= goal:  # so curve[before] < goal <= curve[after]
            rise = (goal - curve[before]) / (curve[after] - curve[before])
            return before + (after - before) * rise
    return None


def report_targets(averaged: dict[str, dict[int, float]], strengths: list[dict[str, float]]):
    top = max(BUDGETS)
    goal = averaged["random"][top]
    for name in list(CHOICES)[1:]:
        labels = labels_to_reach(averaged[name], goal)
        if labels is None:
            verdict = "not within the budgets; target <= 60%: NOT met"
        else:
            share = labels / top
            verdict = f"with {labels:.0f} labels ({share:.0%}); target <= 60%: " + (
                "met" if share <= 0.6 else "NOT met"
            )
        print(f"active selection: random's {top}-label accuracy ({goal:.3f}) reached by "
              f"{name} " + verdict)  # fmt: skip
    for budget in (top // 2, top):
        clean = averaged["clean panel, majority"][budget]
        noisy = averaged["30% bad, majority"][budget]
        crowd = averaged["30% bad, crowd model"][budget]
        cost = clean - noisy
        recovered = f"{(crowd - noisy) / cost:.0%}" if cost > 0.005 else "n/a (no cost to recover)"
        print(f"bad annotators at {budget} pairs: they cost {cost:+.3f} under majority vote; the "
              f"crowd model recovers {recovered} of it (target >= 80%)")  # fmt: skip
    print(f"strength margins at {top} labels, mean of seeds: " + "; ".join(
        f"{key} {mean([s[key] for s in strengths]):.3f}" for key in strengths[0]))  # fmt: skip


def plot(averaged: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(BUDGETS)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, names, title, unit in (
        (left, tuple(CHOICES), "Pairs chosen (one careful vote a pair)", "labels"),
        (right, ("clean panel, majority", "30% bad, majority", "30% bad, crowd model"),
         "Votes to labels (three votes a pair)", "pairs"),
    ):  # fmt: skip
        for name in names:
            axis.plot(list(BUDGETS), [averaged[name][b] for b in BUDGETS], marker="o", label=name)
        if unit == "labels":  # the active-selection target: random's top accuracy by 60% of labels
            axis.axhline(averaged["random"][top], color="grey", linestyle="--", linewidth=0.8,
                         label=f"random's {top}-label accuracy")  # fmt: skip
            axis.axvline(0.6 * top, color="grey", linestyle=":", linewidth=0.8,
                         label="target: 60% of the labels")  # fmt: skip
        axis.set_title(title)
        axis.set_xlabel(f"{unit} bought")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    left.set_ylabel("held-out accuracy against the gold judge")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
