"""Database side of bench/annotation_load.py, run in its own process with that run's settings.

python bench/load_fixture.py setup ANNOTATORS PAIRS OVERLAP TAG   -> {"project", "tokens"}
python bench/load_fixture.py verify PROJECT_ID                    -> counts and judgment ids
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def setup(annotators: int, pairs: int, overlap: int, tag: str) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from annotate.models import MemberRole, Prompt, Response, Round
    from annotate.services import comparisons_create_for_round, membership_set, project_create
    from registry.selectors import active_policy

    call_command("migrate", verbosity=0)
    slug = f"load-{tag}"
    project = project_create(name=slug, slug=slug, required_annotations=overlap)
    policy = active_policy(project_id=project.pk)
    round_ = Round.objects.create(project=project, number=1, policy=policy, quota=pairs)
    prompts = Prompt.objects.bulk_create(
        [Prompt(project=project, external_id=f"p{i}", text=f"Question {i}?") for i in range(pairs)]
    )
    answer = "A reasonably long answer with several sentences in it. " * 8
    Response.objects.bulk_create(
        [
            Response(prompt=p, round=round_, model_version=policy, text=f"{k}: {answer}")
            for p in prompts
            for k in range(2)
        ]
    )
    comparisons_create_for_round(round=round_)
    tokens = []
    for i in range(annotators):
        user, _ = get_user_model().objects.get_or_create(username=f"{slug}-annotator-{i}")
        membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    settle_database()
    return {"project": project.pk, "tokens": tokens}


def settle_database() -> None:
    """Fresh statistics and no dead rows, so autovacuum does not wake inside the timed run."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def verify(project_id: int) -> dict:
    from django.db.models import Count, F

    from annotate.models import Comparison, Judgment

    judgments = Judgment.objects.filter(comparison__project_id=project_id)
    per_pair = Comparison.objects.filter(project_id=project_id).annotate(n=Count("judgments"))
    return {
        "ids": sorted(judgments.values_list("id", flat=True)),
        "duplicates": judgments.values("comparison", "annotator")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "over_quota": per_pair.filter(n__gt=F("required_annotations")).count(),
        "count_mismatch": per_pair.exclude(n=F("judgment_count")).count(),
    }


if __name__ == "__main__":
    import django

    django.setup()
    command, *args = sys.argv[1:]
    if command == "setup":
        result = setup(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        result = verify(int(args[0]))
    print(json.dumps(result))
