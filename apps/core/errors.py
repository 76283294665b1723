"""Application errors. Each carries an HTTP status, a machine code and a title, so one
handler can turn it into RFC 9457 problem+json (and a command into a precise message)."""

from __future__ import annotations


class ApplicationError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra or {}  # more members of the problem document
        self.headers = headers or {}  # response headers (e.g. Upload-Offset on a 409)


class NotFoundError(ApplicationError):
    status = 404
    code = "not_found"
    title = "Not found"


class UnknownRecordTypeError(ApplicationError):
    code = "unknown_type"
    title = "Record type could not be determined"


class ConflictError(ApplicationError):
    status = 409
    code = "conflict"
    title = "Conflict"


class UnprocessableError(ApplicationError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable request"


class PayloadTooLargeError(ApplicationError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class WrongRecordTypeError(ApplicationError):
    code = "type_not_allowed"
    title = "Record type not accepted here"


class GoneError(ApplicationError):
    status = 410
    code = "gone"
    title = "Gone"
