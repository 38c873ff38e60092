"""Run rounds end to end with simulated annotators and print a table per round."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Project
from config.errors import ApplicationError
from training.loop import report_table, run_rounds
from training.simulation import oracle_from_spec


class Command(BaseCommand):
    help = (
        "Run N rounds headless: the active policy writes answers, simulated annotators judge "
        "them (--oracle, --noise), the reward model and policy train, gates evaluate the "
        "candidate and a passing one is promoted to write the next round."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--rounds", type=int, default=1)
        parser.add_argument(
            "--oracle", default="shorter:80", help="shorter[:N], contains:w,... or reward:<dir>."
        )
        parser.add_argument("--noise", type=float, default=0.0)
        parser.add_argument(
            "--annotators", type=int, default=None, help="Default: the project's overlap."
        )
        parser.add_argument(
            "--no-promote",
            action="store_true",
            help="Leave passing candidates for an admin instead of promoting them.",
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.", returncode=2)
        if options["rounds"] < 1:
            raise CommandError("--rounds must be at least 1.", returncode=2)
        try:
            oracle = oracle_from_spec(options["oracle"], cache_dir=settings.MODEL_CACHE_DIR)
            reports = run_rounds(
                project=project,
                rounds=options["rounds"],
                oracle=oracle,
                noise=options["noise"],
                annotators=options["annotators"],
                promote=not options["no_promote"],
                seed=options["seed"],
                log=lambda message: self.stderr.write(message),
            )
        except ApplicationError as error:
            raise CommandError(str(error), returncode=2) from error
        self.stdout.write(report_table(reports))
        failed = [r for r in reports if r.error]
        if failed:
            raise CommandError(f"round {failed[-1].round}: {failed[-1].error}", returncode=1)
