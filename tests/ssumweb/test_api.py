"""The API's shared plumbing: one error shape for bodies it cannot parse and URLs nothing answers."""
import pytest

pytestmark = pytest.mark.django_db


def test_a_body_nested_too_deeply_is_a_parse_error_not_a_500(api, project, operator):
    body = f'{{"project": {project.pk}, "name": "a", "description": {"[" * 50_000 + "]" * 50_000}}}'
    response = api(operator).post("/api/samples/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error", response.content[:200]


@pytest.mark.parametrize("url", ["/api/nothing/", "/api/translations/1/bogus/dzi", "/api/pairs/1/image/.."])
def test_an_api_url_nothing_answers_is_a_json_404(api, operator, url):
    response = api(operator).get(url)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found", "errors": []}


def test_a_page_url_nothing_answers_is_a_page(client):
    response = client.get("/nothing-here/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
