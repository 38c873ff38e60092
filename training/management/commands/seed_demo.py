"""Create the demo project, its shipped prompts, an admin and two annotators. Idempotent."""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from annotate.models import MemberRole, Project
from annotate.services import membership_set, project_create, prompts_create
from training.pipeline import round_start

DEMO_PROMPTS = Path(__file__).resolve().parents[2] / "demo" / "prompts.jsonl"
DEMO_GUIDELINES = """\
Pick the answer you would rather receive.

- **Left / Right**: one answer is more helpful, correct and clear.
- **Tie**: both are about equally good.
- **Both bad**: neither answers the prompt acceptably.

Judge the content, not the length. Mark strength *slight*, *clear* or *strong*.
"""
DEMO_TRAINING = {
    # MiniLM reads whole answers at 512 tokens; a few dozen pairs need several brisk passes.
    "reward": {
        "use_lora": False,
        "learning_rate": 2e-4,
        "epochs": 4,
        "batch_size": 8,
        "max_length": 512,
    },
    "dpo": {"learning_rate": 5e-4, "epochs": 2},
    "evaluation": {"samples_per_prompt": 2},
}
DEMO_ACCOUNTS = [
    # (username, password, is_staff)
    ("admin", "tandem-admin", True),
    ("alice", "tandem-alice", False),
    ("bob", "tandem-bob", False),
]


def load_demo_prompts() -> list[dict]:
    with DEMO_PROMPTS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class Command(BaseCommand):
    help = "Seed the demo project with the shipped prompts and demo accounts (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug="demo").first() or project_create(
            name="Demo: helpful answers",
            slug="demo",
            description="Compare two answers of SmolLM2-135M-Instruct to everyday questions.",
            guidelines=DEMO_GUIDELINES,
            required_annotations=1,
            round_quota=40,
            # A small encoder, fully fine-tuned, is the quickest good reward model on a CPU.
            reward_backbone="all-minilm-l6-v2",
            training_settings=DEMO_TRAINING,
        )
        result = prompts_create(project=project, rows=load_demo_prompts(), source="demo")
        User = get_user_model()
        for username, password, is_staff in DEMO_ACCOUNTS:
            user, _ = User.objects.get_or_create(username=username)
            user.is_staff = user.is_superuser = is_staff
            user.set_password(password)
            user.save()
            if not is_staff:
                membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
        self.stdout.write(
            f"Demo project '{project.slug}': {len(result.created)} prompts added, "
            f"{len(result.unchanged)} already there."
        )
        if not project.rounds.exists():
            # The first round: the worker has the base policy write two answers per prompt,
            # and the pairs appear in the annotators' queue as soon as they are written.
            round_start(project=project)
            self.stdout.write("Round 1 opened; the worker is writing its answers.")
        for username, password, is_staff in DEMO_ACCOUNTS:
            role = "admin" if is_staff else "annotator"
            self.stdout.write(f"  {role:<9} login: {username} / {password}")
