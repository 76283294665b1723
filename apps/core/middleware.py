from django.http import JsonResponse

from apps.core.api import PROBLEM_JSON, problem

_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    500: "Server error",
}


class ProblemJSONMiddleware:
    """Errors that never reach a DRF view (unknown URLs, Django's own 4xx/5xx pages, an
    exception in a plain view) answer as application/problem+json, never an HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code >= 400 and response.get("Content-Type", "").startswith("text/html"):
            code = response.status_code
            detail = (
                f"No resource at {request.path}."
                if code == 404
                else "The server failed to handle this request."
                if code >= 500
                else "The request was refused."
            )
            return _problem(code, detail)
        return response

    def process_exception(self, request, exception):
        return _problem(500, "The server failed to handle this request.")


def _problem(code: int, detail: str) -> JsonResponse:
    title = _TITLES.get(code, "Error")
    slug = title.lower().replace(" ", "_")
    return JsonResponse(problem(code, title, detail, slug), status=code, content_type=PROBLEM_JSON)
