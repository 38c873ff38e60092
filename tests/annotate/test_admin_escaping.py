"""Model outputs are untrusted: the Django admin shows them as text, never as markup."""

from __future__ import annotations

import pytest

from tests.factories import ComparisonFactory, JudgmentFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db

HOSTILE = (
    '<script>alert("x")</script><img src=x onerror=alert(1)><a href="javascript:alert(2)">go</a>'
)


@pytest.fixture
def admin_client_logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def _assert_escaped(html: bytes) -> None:
    text = html.decode()
    assert "<script>alert" not in text
    assert "<img src=x onerror" not in text
    assert '<a href="javascript:' not in text
    assert "&lt;script&gt;alert" in text


def test_response_list_and_detail_escape_model_output(admin_client_logged_in, project):
    response = ResponseFactory(prompt=PromptFactory(project=project), text=HOSTILE)
    _assert_escaped(admin_client_logged_in.get("/admin/annotate/response/").content)
    _assert_escaped(
        admin_client_logged_in.get(f"/admin/annotate/response/{response.pk}/change/").content
    )


def test_comparison_page_escapes_both_answers(admin_client_logged_in, project):
    prompt = PromptFactory(project=project, text=HOSTILE)
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text=HOSTILE),
        response_b=ResponseFactory(prompt=prompt, text="fine"),
    )
    page = admin_client_logged_in.get(f"/admin/annotate/comparison/{comparison.pk}/change/")
    assert page.status_code == 200
    _assert_escaped(page.content)
    _assert_escaped(admin_client_logged_in.get("/admin/annotate/prompt/").content)


def test_judgment_rationale_is_escaped(admin_client_logged_in, project):
    judgment = JudgmentFactory(
        comparison=ComparisonFactory(prompt=PromptFactory(project=project)), rationale=HOSTILE
    )
    page = admin_client_logged_in.get(f"/admin/annotate/judgment/{judgment.pk}/change/")
    _assert_escaped(page.content)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/annotate/project/",
        "/admin/annotate/membership/",
        "/admin/annotate/round/",
        "/admin/annotate/assignment/",
        "/admin/registry/modelversion/",
        "/admin/training/trainingrun/",
        "/admin/training/metricpoint/",
        "/admin/registry/promotionevent/",
    ],
)
def test_every_admin_list_page_renders(admin_client_logged_in, project, path):
    assert admin_client_logged_in.get(path).status_code == 200


def test_annotators_cannot_open_the_admin(client, annotator):
    client.force_login(annotator)
    response = client.get("/admin/annotate/response/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
