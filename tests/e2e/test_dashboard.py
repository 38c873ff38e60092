"""An admin watches a training run move and promotes a candidate version."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotate.services import round_open
from registry.models import ModelKind, ModelVersion, VersionStatus
from tests.e2e.conftest import login
from training.models import MetricPoint, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_sees_run_progress_move_and_promotes_a_version(
    page, project, e2e_admin, screenshot_dir
):
    round_open(project=project)
    base = ModelVersion.objects.get(project=project, kind=ModelKind.POLICY)
    candidate = ModelVersion.objects.create(
        project=project,
        kind=ModelKind.POLICY,
        number=1,
        parent=base,
        base_model=base.base_model,
        metrics={"train_loss": 0.52, "eval_accuracy": 0.64},
        gate_results={
            "passed": True,
            "gates": {
                "win_rate": {"value": 0.61, "threshold": 0.5, "passed": True},
                "kl": {"value": 2.4, "threshold": 10.0, "passed": True},
                "heldout_accuracy": {"value": 0.66, "threshold": 0.5, "passed": True},
            },
        },
    )
    run = TrainingRun.objects.create(
        project=project,
        kind="dpo",
        status="running",
        step=2,
        total_steps=10,
        started_at=timezone.now() - timezone.timedelta(seconds=40),
    )
    for step in range(1, 3):
        MetricPoint.objects.create(run=run, step=step, name="loss", value=0.69 - 0.03 * step)
        MetricPoint.objects.create(run=run, step=step, name="accuracy", value=0.5 + 0.05 * step)

    login(page, "boss", then=f"/app/admin/{project.pk}/training")
    steps = page.get_by_test_id(f"run-{run.pk}-steps")
    steps.wait_for()
    assert steps.inner_text() == "2 / 10"

    TrainingRun.objects.filter(pk=run.pk).update(step=7)
    for step in range(3, 8):
        MetricPoint.objects.create(run=run, step=step, name="loss", value=0.69 - 0.03 * step)
        MetricPoint.objects.create(run=run, step=step, name="accuracy", value=0.5 + 0.05 * step)
    page.wait_for_function(
        "id => document.querySelector(`[data-testid=run-${id}-steps]`)?.textContent === '7 / 10'",
        arg=run.pk,
    )
    assert page.get_by_role("progressbar").first.get_attribute("aria-valuenow") == "7"
    page.wait_for_timeout(2500)  # one more poll so the curves hold the new points
    page.screenshot(path=str(screenshot_dir / "dashboard.png"), full_page=True)

    row = page.get_by_test_id(f"version-{candidate.pk}")
    assert "win rate" in row.inner_text()
    row.get_by_role("button", name="Promote").click()
    assert "open the next round" in row.get_by_role("dialog").inner_text()
    row.get_by_role("button", name=f"Confirm: promote v{candidate.number}").click()
    row.get_by_text("serving").wait_for()
    row.get_by_role("button", name=f"Open the next round with v{candidate.number}").wait_for()
    candidate.refresh_from_db()
    base.refresh_from_db()
    assert candidate.status == VersionStatus.ACTIVE
    assert base.status == VersionStatus.RETIRED
    assert candidate.promoted_by == e2e_admin

    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("stopping…").wait_for()  # the worker stops it within one step
    run.refresh_from_db()
    assert run.cancel_requested


def test_admin_uploads_prompts_and_sees_each_bad_row(page, project, e2e_admin, tmp_path):
    upload = tmp_path / "prompts.jsonl"
    upload.write_text('{"text": "Fine question?"}\n{"text": ""}\n{"nope": 1}\n')
    login(page, "boss", then=f"/app/admin/{project.pk}/data")
    form = page.get_by_role("form", name="Upload prompts")
    form.locator('input[type="file"]').set_input_files(str(upload))
    form.get_by_role("button", name="Upload").click()
    errors = form.get_by_role("table", name="Row errors")
    errors.wait_for()
    rows = errors.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).inner_text().startswith("2")
    assert rows.nth(1).inner_text().startswith("3")
    assert "nothing was stored" in form.get_by_role("alert").inner_text()
    assert project.prompts.count() == 0

    form.get_by_label("all or nothing").uncheck()
    form.get_by_role("button", name="Upload").click()
    form.get_by_text("1 created").wait_for()
    assert list(project.prompts.values_list("text", flat=True)) == ["Fine question?"]
