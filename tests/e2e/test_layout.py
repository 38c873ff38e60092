"""Every control stays in reach: on a short screen with both help panels open, beside a long code
line, under the toast, and on a phone-wide dashboard."""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.models import ModelKind, ModelVersion
from tests.e2e.conftest import login
from tests.e2e.test_annotator import _answers, _pairs

pytestmark = pytest.mark.django_db(transaction=True)

LONG_LINE = "value = " + " + ".join(f"term_{i}" for i in range(60))


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None, "not on screen"
    return found


def overlaps(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_the_workspace_keeps_its_buttons_in_view_and_long_code_wraps(
    page, project, e2e_annotator, screenshot_dir
):
    rules = (f"Rule {i}: prefer the answer that is right." for i in range(30))
    project.guidelines = "\n\n".join(rules)
    project.save()
    code = f"Here:\n\n```python\n{LONG_LINE}\n```\n"
    _pairs(project, [(code, _answers(0)[1]), _answers(1)])
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, "alice", then=f"/app/annotate/{project.pk}")
    page.locator("main.pair").wait_for()

    page.keyboard.press("g")
    page.keyboard.press("?")
    page.get_by_role("complementary", name="Keys").wait_for()
    judge_button = box(page.get_by_role("button", name="Left better"))
    assert judge_button["y"] + judge_button["height"] <= 900, "judging buttons below the fold"
    page.screenshot(path=str(screenshot_dir / "workspace-short-screen.png"))

    # A code line wider than its answer wraps inside it: nothing is cut off or hidden.
    overflow = page.evaluate(
        """() => {
            const pre = [...document.querySelectorAll('[data-side] pre')]
                .find((block) => block.textContent.includes('term_59'));
            const edge = pre.closest('[data-side]').getBoundingClientRect().right;
            const hidden = (el) => el.scrollWidth > el.clientWidth + 1;
            return {
                hidden: hidden(pre) || hidden(pre.querySelector('code')),
                inside: pre.getBoundingClientRect().right <= edge + 1,
            };
        }"""
    )
    assert overflow == {"hidden": False, "inside": True}

    # The toast after a judgment never covers the bar's buttons.
    page.keyboard.press("g")
    page.keyboard.press("?")
    page.wait_for_timeout(project.min_view_ms + 100)
    page.keyboard.press("1")
    toast = page.locator(".flash")
    toast.wait_for()
    for name in ("Guidelines", "Keys"):
        assert not overlaps(box(toast), box(page.get_by_role("button", name=name)))


def test_a_phone_wide_dashboard_keeps_promote_on_screen(page, project, e2e_admin):
    base = ModelVersion.objects.get(project=project, kind=ModelKind.POLICY)
    ModelVersion.objects.create(
        project=project,
        kind=ModelKind.POLICY,
        number=1,
        parent=base,
        base_model=base.base_model,
        metrics={"train_loss": 0.5},
        gate_results={"passed": True, "gates": {}},
        created_at=timezone.now(),
    )
    page.set_viewport_size({"width": 400, "height": 800})
    login(page, "boss", then=f"/app/admin/{project.pk}/training")
    promote = page.get_by_role("button", name="Promote")
    promote.wait_for()
    promote.scroll_into_view_if_needed()
    found = box(promote)
    assert found["x"] >= 0 and found["x"] + found["width"] <= 400, "Promote is off-screen"
    assert page.evaluate("document.documentElement.scrollWidth") <= 400, "the page scrolls sideways"
