"""Shared by the training tests: tiny hyperparameters and judged pairs."""

from __future__ import annotations

from annotate.models import Comparison
from annotate.services import assignment_lease_next, judgment_submit
from tests.annotate.test_judging import annotators
from tests.factories import PromptFactory, ResponseFactory
from training.pipeline import prompt_is_heldout
from training.project_settings import training_settings_of

TINY_TRAINING = {
    "max_steps": 4,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "max_length": 32,
    "max_prompt_length": 16,
    "precision": "fp32",
    "checkpoint_every": 2,
    "eval_every": 2,
}

TINY_GENERATION = {"max_new_tokens": 6, "samples_per_prompt": 2, "precision": "fp32"}


def prompts_on_both_sides(project, count: int) -> list:
    """`count` new prompts of which at least one is held out and one is not.

    The held-out split hashes prompt ids, which the database assigns; without this, a run
    whose ids all fell on one side would leave a split test nothing to check.
    """
    fraction = training_settings_of(project).evaluation.heldout_fraction
    prompts: list = []
    index = 0
    while len(prompts) < count:
        prompt = PromptFactory(project=project, text=f"w{index % 40} w{(index * 7) % 40}")
        index += 1
        sides = {prompt_is_heldout(p.pk, fraction) for p in [*prompts, prompt]}
        if len(prompts) == count - 1 and len(sides) < 2:
            prompt.delete()  # the last place must bring the side still missing
            continue
        prompts.append(prompt)
    return prompts


def judged_pairs(project, count: int) -> None:
    """Resolved comparisons: the annotator always prefers the answer saying "good yes".

    Their prompts fall on both sides of the held-out split (count >= 2).
    """
    (judge,) = annotators(project, 1)
    for prompt in prompts_on_both_sides(project, count):
        good = ResponseFactory(
            prompt=prompt, text="good yes", source="external", model_version=None
        )
        bad = ResponseFactory(prompt=prompt, text="bad no", source="external", model_version=None)
        Comparison.objects.create(project=project, prompt=prompt, response_a=good, response_b=bad)
    while (lease := assignment_lease_next(project=project, annotator=judge)) is not None:
        judgment_submit(
            assignment_id=lease.pk, annotator=judge, choice="left" if lease.a_on_left else "right"
        )
