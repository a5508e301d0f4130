"""Errors as HTTP problem details (RFC 9457, `application/problem+json`)."""

from __future__ import annotations

import http

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An answer other than success: its status, a short title, what went wrong (`detail`) and
    members that locate it (`attribute` of a bad event, `topic`...)."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **members: object) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.members = members

    def response(self, request: HTTPConnection) -> Response:
        body = {
            "type": "about:blank",
            "title": http.HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "instance": request.url.path,
            **self.members,
        }
        return Response(msgspec.json.encode(body), self.status, self.headers, media_type=PROBLEM_CONTENT_TYPE)


async def problem_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(request)
