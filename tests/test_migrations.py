"""Every model change has its migration: a fresh database built from them matches the code."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exit_:  # --check exits non-zero when a migration is missing
        missing = out.getvalue()
        pytest.fail(f"a migration is missing (makemigrations exited {exit_.code}):\n{missing}")
