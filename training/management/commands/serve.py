"""Run the policy server: OpenAI-compatible /v1 over the registry's versions (uvicorn)."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from training.serving.app import build_app


class Command(BaseCommand):
    help = "Serve the projects' policies (and reward models) behind an OpenAI-compatible API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SERVE_HOST)
        parser.add_argument("--port", type=int, default=settings.SERVE_PORT)
        parser.add_argument(
            "--no-preload", action="store_true",
            help="Load base models on their first request instead of at start.",
        )  # fmt: skip
        parser.add_argument("--log-level", default="info")

    def handle(self, *args: Any, **options: Any) -> None:
        app = build_app(preload=not options["no_preload"])
        self.stdout.write(f"Policy server on http://{options['host']}:{options['port']}/v1")
        # One process: the models live in it, and one batch serves every connection.
        uvicorn.run(
            app, host=options["host"], port=options["port"], log_level=options["log_level"],
            access_log=False, timeout_graceful_shutdown=5,
        )  # fmt: skip
