"""Every page carries the strict Content-Security-Policy, and HTTPS deployments send HSTS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from config.security import CONTENT_SECURITY_POLICY

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/admin/login/", "text/html"),
        ("/api/docs/", "text/html"),
        ("/api/docs/?script=", "application/javascript"),
        ("/api/projects/", "text/html"),  # the browsable API
        ("/healthz", "application/json"),
        ("/app/login", "text/html"),
    ],
)
def test_every_kind_of_page_has_the_strict_policy(admin_user, path, accept):
    client = Client()
    client.force_login(admin_user)
    response = client.get(path, HTTP_ACCEPT=accept)
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY.split("script-src")[1].split(";")[0]


def test_the_api_docs_start_without_an_inline_script(admin_user, db):
    client = Client()
    client.force_login(admin_user)
    html = client.get("/api/docs/", HTTP_ACCEPT="text/html").content.decode()
    for chunk in html.split("<script")[1:]:
        opening = chunk.split(">", 1)[0]
        assert "src=" in opening, f"an inline script: <script{opening}>"


def _hsts_seconds(**environment: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(environment)
    code = "import django; django.setup(); from django.conf import settings; "
    code += "print(settings.SECURE_HSTS_SECONDS)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_https_deployments_send_hsts_and_plain_ones_do_not(settings):
    assert _hsts_seconds(SECURE_COOKIES="1") == str(365 * 24 * 3600)
    assert _hsts_seconds(SECURE_COOKIES="0") == "0"


@pytest.mark.django_db
def test_a_secure_request_gets_the_hsts_header(settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    response = Client().get("/healthz", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000"
