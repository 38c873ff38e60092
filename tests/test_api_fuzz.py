"""Generated requests against the live schema: no 5xx, every status documented, every body in
its schema (schemathesis, bounded, against pytest-django's live server on the test database)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from annotate.services import project_create, prompts_create
from tests.factories import UserFactory

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
MAX_EXAMPLES = 10  # per operation
# Fuzzing and stateful sequences fit CI's time; the coverage phase (boundary values of every
# field) takes minutes against the test server, so it runs by hand (see the README).
PHASES = "fuzzing,stateful"


@pytest.mark.django_db(transaction=True)
def test_generated_requests_find_no_server_error_and_no_undocumented_status(live_server, tmp_path):
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists() or shutil.which("schemathesis"), "schemathesis (a dev extra) is missing"
    admin = UserFactory(username="fuzz-admin", is_staff=True, is_superuser=True)
    project = project_create(name="Fuzzed", slug="fuzzed")
    prompts_create(project=project, rows=[{"text": "Say hello."}], source="fuzz")
    token = Token.objects.create(user=admin)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            str(cli),
            "run",
            f"{live_server.url}/api/schema/",
            "-H",
            f"Authorization: Token {token.key}",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--phases",
            PHASES,
            "--seed",
            "20261201",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache folder goes there, not into the checkout
    )
    summary = done.stdout[-6000:]
    assert done.returncode == 0, summary
    assert "generated" in summary and " failed" not in summary.split("Test cases:")[-1], summary
