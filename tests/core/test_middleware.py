"""ProblemJSONMiddleware: errors outside DRF views answer problem+json with the right
status; a browser that asks for HTML gets Django's page."""

import logging

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.test import Client
from django.urls import path


def _missing(request):
    raise Http404("no such thing")


def _forbidden(request):
    raise PermissionDenied


def _broken(request):
    raise RuntimeError("boom")


def _fine(request):
    return HttpResponse("ok")


urlpatterns = [
    path("missing/", _missing),
    path("forbidden/", _forbidden),
    path("broken/", _broken),
    path("fine/", _fine),
    path("dashboard/missing/", _missing),
]

pytestmark = [pytest.mark.urls("tests.core.test_middleware"), pytest.mark.django_db]


@pytest.mark.parametrize(
    ("url", "status", "title", "detail"),
    [
        ("/missing/", 404, "Not found", "No resource at /missing/."),
        ("/forbidden/", 403, "Forbidden", "The request was refused."),
        ("/nowhere/", 404, "Not found", "No resource at /nowhere/."),
    ],
)
def test_a_plain_views_4xx_is_that_status_as_problem_json(url, status, title, detail):
    """Http404 and PermissionDenied from a plain Django view keep their status (not 500)."""
    response = Client(raise_request_exception=False).get(url)
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": title.lower().replace(" ", "_"),
        "request_id": response["X-Request-Id"],
    }


def test_an_exception_in_a_plain_view_is_a_logged_500_problem(caplog):
    """A bug answers 500 problem+json, and the traceback is logged, not swallowed."""
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = Client(raise_request_exception=False).get("/broken/")
    assert response.status_code == 500
    assert response.json()["detail"] == "The server failed to handle this request."
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.getMessage() == "Internal Server Error: /broken/"
    assert record.exc_info[0] is RuntimeError


def test_a_browser_on_the_dashboard_gets_an_html_error_page():
    """Accept: text/html on the dashboard keeps Django's own page; elsewhere it is JSON."""
    browser = {"Accept": "text/html,*/*;q=0.8"}
    response = Client().get("/dashboard/missing/", headers=browser)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    elsewhere = Client().get("/missing/", headers=browser)
    assert elsewhere["Content-Type"] == "application/problem+json"


def test_a_success_is_left_alone():
    response = Client().get("/fine/")
    assert (response.status_code, response.content) == (200, b"ok")
