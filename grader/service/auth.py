"""Bearer-token auth: one dependency for the API and the web page (header or `grader_token` cookie)."""

from __future__ import annotations

import hmac

from fastapi import Request

from grader.service.problems import ProblemError

COOKIE_NAME = "grader_token"


def token_is_valid(candidate: str, tokens: list[str]) -> bool:
    """Compare against every configured token in constant time, so timing reveals neither match nor prefix."""
    supplied = candidate.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(supplied, token.encode())
    return matched


def presented_token(request: Request) -> str | None:
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
    tokens: list[str] = request.app.state.tokens
    if not tokens:
        return
    candidate = presented_token(request)
    if candidate is None:
        raise ProblemError(
            401,
            "This service needs an API token: send `Authorization: Bearer <token>`.",
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="grader"'},
        )
    if not token_is_valid(candidate, tokens):
        raise ProblemError(
            401,
            "The API token is not valid.",
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="grader", error="invalid_token"'},
        )
