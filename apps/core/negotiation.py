"""Content negotiation (REST_FRAMEWORK's DEFAULT_CONTENT_NEGOTIATION_CLASS): a module of its
own, since DRF's APIView reads that setting as it is defined, before apps.core.api is."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """`?format=` with no renderer of that name is a 400 naming the formats there are
    (DRF answers 404, as if the resource were missing); one that names a renderer wins over
    an `Accept` that does not take it (DRF answers 406)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        # Most requests ask for nothing in particular (no query string, so no `?format=`;
        # `Accept` absent or `*/*`): the first renderer, with its own media type, as DRF
        # would choose after parsing the header and the query string.
        if (
            format_suffix is None
            and not request.META.get("QUERY_STRING")
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
        ):
            return renderers[0], renderers[0].media_type
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            # `?format=` names what the client wants, whatever a library put in Accept
            named = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
            if named:
                chosen = self.filter_renderers(renderers, named)[0]
                return chosen, chosen.media_type
            # A client that takes problem documents gets its error as one, not a 406 in
            # their place (and an answer that is no problem as JSON, which it reads).
            if "application/problem+json" not in request.META.get("HTTP_ACCEPT", ""):
                raise
            plain = [renderer for renderer in renderers if renderer.format == "json"]
            if not plain:
                raise
            return plain[0], plain[0].media_type

    def filter_renderers(self, renderers, format):
        found = [renderer for renderer in renderers if renderer.format == format]
        if not found:
            names = ", ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise exceptions.ValidationError({"format": [f'"{format}" is not one of: {names}.']})
        return found
