"""Content negotiation's shortcut for a request that asks for nothing in particular picks
exactly what DRF's own negotiation (with the project's `?format=` check) picks, for every
renderer list the API uses."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from apps.core.api import ProblemJSONRenderer
from apps.core.exactjson import ExactJSONRenderer
from apps.core.negotiation import ContentNegotiation
from apps.ingestions.apis._rejects import NDJSONRenderer
from apps.ingestions.apis.contract import SchemaJSONRenderer

RENDERER_LISTS = [
    [JSONRenderer],
    [JSONRenderer, NDJSONRenderer],
    [NDJSONRenderer, JSONRenderer],
    [ExactJSONRenderer],
    [SchemaJSONRenderer],
    [ProblemJSONRenderer, JSONRenderer],
]


@pytest.mark.parametrize("classes", RENDERER_LISTS, ids=lambda c: "+".join(r.__name__ for r in c))
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/ingest/uploads/", {}),
        ("/api/v1/ingest/uploads/", {"HTTP_ACCEPT": "*/*"}),
        ("/api/v1/ingest/uploads/?format=ndjson", {}),
        ("/api/v1/ingest/uploads/", {"HTTP_ACCEPT": "application/x-ndjson"}),
        ("/api/v1/ingest/uploads/", {"HTTP_ACCEPT": "*/*;q=0.1, application/x-ndjson"}),
    ],
)
def test_the_shortcut_picks_what_drf_picks(classes, path, headers):
    renderers = [cls() for cls in classes]
    request = Request(APIRequestFactory().get(path, **headers))
    try:
        # DRF's own choice, with the project's filter_renderers (a 400 for a bad format)
        expected = DefaultContentNegotiation.select_renderer(
            ContentNegotiation(), request, renderers
        )
    except Exception as exc:  # noqa: BLE001 - the same refusal is expected
        with pytest.raises(type(exc)):
            ContentNegotiation().select_renderer(request, renderers)
        return
    chosen = ContentNegotiation().select_renderer(request, renderers)
    assert (type(chosen[0]), chosen[1]) == (type(expected[0]), expected[1])
