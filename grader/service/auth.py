"""Bearer-token auth: one dependency for the API and the web page (header or `grader_token` cookie),
and a gate in front of the API that refuses a request without a valid token before its body is read."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from fastapi import Request
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from grader.service.problems import ProblemError, error_response

COOKIE_NAME = "grader_token"


def token_is_valid(candidate: str, tokens: list[str]) -> bool:
    """Compare against every configured token in constant time, so timing reveals neither match nor prefix."""
    supplied = candidate.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(supplied, token.encode())
    return matched


def presented_token(request: HTTPConnection) -> str | None:
    return bearer_token(request.headers.get("authorization", "")) or request.cookies.get(COOKIE_NAME) or None


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value, if it is one."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def require_token(request: Request) -> None:
    """Let the request through when the service is open or a valid token comes with it; else 401.

    Async only so that FastAPI runs it on the event loop instead of a worker thread: it never waits.
    """
    refusal = token_refusal(request, request.app.state.tokens)
    if refusal is not None:
        raise refusal


def token_refusal(connection: HTTPConnection, tokens: list[str]) -> ProblemError | None:
    """The 401 for a request without a valid token (None when it has one, or the service is open)."""
    if not tokens:
        return None
    candidate = presented_token(connection)
    if candidate is None:
        return ProblemError(
            401,
            "This service needs an API token: send `Authorization: Bearer <token>`.",
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="grader"'},
        )
    if not token_is_valid(candidate, tokens):
        return ProblemError(
            401,
            "The API token is not valid.",
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="grader", error="invalid_token"'},
        )
    return None


class TokenGate:
    """Refuses a request under `prefix` without a valid token before anything reads its body: FastAPI
    parses a whole form (up to the upload limit, spooled to disk) before a route's dependencies run.
    The routes keep `require_token` as well."""

    def __init__(
        self, app: ASGIApp, prefix: str, tokens: Callable[[], list[str]], routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.tokens = tokens
        self.routes = routes  # a refused request is counted under the one it names, as routing would

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the path as routing matches it: without the root path the app is served under, if any
        if scope["type"] == "http" and (get_route_path(scope) + "/").startswith(self.prefix + "/"):
            connection = HTTPConnection(scope)
            refusal = token_refusal(connection, self.tokens())
            if refusal is not None:
                scope["route"] = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
                await error_response(refusal, connection.url.path)(scope, receive, send)
                return
        await self.app(scope, receive, send)
