"""The schema documents every error status the API answers, in the one error shape."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method.upper(), operation


def test_every_operation_documents_its_error_statuses_with_the_error_shape(schema):
    for path, method, operation in _operations(schema):
        codes = set(operation["responses"])
        assert "400" in codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            assert {"404", "409", "413"} <= codes, (method, path)
        body = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/Error"}, (method, path)
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "detail"}


def test_signed_in_operations_document_401_and_403_and_the_login_429(schema):
    for path, _method, operation in _operations(schema):
        codes = set(operation["responses"])
        if path in ("/api/web/login/", "/api/web/logout/"):
            continue
        assert {"401", "403"} <= codes, path
    login = schema["paths"]["/api/web/login/"]["post"]["responses"]
    assert "429" in login


def test_an_unknown_api_url_answers_in_the_api_error_shape(client):
    answer = client.get("/api/no-such-thing/")
    assert answer.status_code == 404
    body = answer.json()
    assert body == {"error": "not_found", "detail": "No such endpoint: /api/no-such-thing/"}
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
