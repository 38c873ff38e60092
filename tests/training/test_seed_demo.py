"""`manage.py seed_demo`: the demo project, its shipped prompts and working logins."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import RequestFactory

from annotate.models import Membership, Project, Prompt
from registry.selectors import active_policy
from training.management.commands.seed_demo import DEMO_ACCOUNTS

pytestmark = pytest.mark.django_db


def test_seed_creates_project_prompts_and_accounts_and_is_idempotent(client, capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    project = Project.objects.get(slug="demo")
    assert Prompt.objects.filter(project=project).count() >= 40
    assert Prompt.objects.filter(project=project, messages__isnull=False).exists()
    assert active_policy(project_id=project.pk).number == 0
    assert Membership.objects.filter(project=project).count() == 2
    # One round, one generation run for it: seeding again queues nothing more.
    assert project.rounds.count() == 1
    assert list(project.training_runs.values_list("kind", "status")) == [("generate", "queued")]
    output = capsys.readouterr().out
    for username, password, is_staff in DEMO_ACCOUNTS:
        assert f"{username} / {password}" in output
        assert client.login(
            request=RequestFactory().post("/"), username=username, password=password
        )
        page = client.get("/admin/")
        assert page.status_code == (200 if is_staff else 302)
        client.logout()
