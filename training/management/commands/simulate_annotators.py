"""Judge a project's open pairs with simulated annotators (an oracle plus noise)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Project
from config.errors import ApplicationError
from training.simulation import oracle_from_spec, simulate_judging


class Command(BaseCommand):
    help = (
        "Judge open comparisons through the real service layer with an oracle: "
        "shorter[:N] (answers under N words, then shorter), contains:word,... or "
        "reward:<reward-model folder>; --noise flips that share of judgments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--oracle", default="shorter", help="Default: shorter.")
        parser.add_argument("--noise", type=float, default=0.0, help="Flip rate in [0, 1].")
        parser.add_argument(
            "--annotators", type=int, default=None, help="Default: the project's overlap."
        )
        parser.add_argument("--limit", type=int, default=None, help="Stop after this many.")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.", returncode=2)
        if options["annotators"] is not None and options["annotators"] < 1:
            raise CommandError("--annotators must be at least 1.", returncode=2)
        try:
            oracle = oracle_from_spec(options["oracle"], cache_dir=settings.MODEL_CACHE_DIR)
            report = simulate_judging(
                project=project,
                oracle=oracle,
                noise=options["noise"],
                annotators=options["annotators"],
                limit=options["limit"],
                seed=options["seed"],
            )
        except ApplicationError as error:
            raise CommandError(str(error), returncode=2) from error
        choices = ", ".join(f"{k} {v}" for k, v in sorted(report.choices.items())) or "none"
        self.stdout.write(
            f"{report.judgments} judgments by the {oracle.name} oracle "
            f"({report.flipped} flipped by noise): {choices}."
        )
