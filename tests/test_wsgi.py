"""The WSGI module prepares a worker before its first request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, sys
import config.wsgi
print(gc.get_freeze_count(), 'annotate.api' in sys.modules)
"""


def test_loading_the_app_imports_the_urls_and_freezes_startup_objects_out_of_gc():
    env = dict(os.environ, SECRET_KEY="wsgi-test", DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frozen, urls_loaded = result.stdout.split()
    assert int(frozen) > 10_000  # Django, DRF and the project's modules, not a handful
    assert urls_loaded == "True"
