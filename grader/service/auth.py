"""Bearer-token auth: one dependency for the API and the web page (header or `grader_token` cookie),
and a gate in front of the API that refuses a request without a valid token before its body is read."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Collection, Sequence
from urllib.parse import urlsplit

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


def session_value(token: str) -> str:
    """What the `grader_token` cookie holds for `token`: derived from it, so that the API token itself
    is never stored in a browser, and a cookie stops working when its token is removed."""
    return hmac.new(token.encode(), b"hw-grader web session v1", hashlib.sha256).hexdigest()


def credentials_valid(request: HTTPConnection, tokens: list[str]) -> bool | None:
    """Whether the request's bearer token, or else its cookie, is valid; None when it presents neither."""
    token = bearer_token(request.headers.get("authorization", ""))
    if token is not None:
        return token_is_valid(token, tokens)
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return token_is_valid(cookie, [session_value(each) for each in tokens])
    return None


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
    valid = credentials_valid(connection, tokens)
    if valid is None:
        return ProblemError(
            401,
            "This service needs an API token: send `Authorization: Bearer <token>`.",
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="grader"'},
        )
    if not valid:
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


class LocalOnly:
    """For a service running open (no tokens), which it may only do on loopback: answers only requests
    addressed to this machine, so that no web page a browser here visits can use it.

    A request whose Host names anything but `localhost`, a loopback address or the name the service
    was told to listen on gets 403: a page of another site whose name was made to resolve to
    127.0.0.1 (DNS rebinding) could otherwise read results. A request with an Origin other than the
    address it was sent to (name and port, as in the Host) gets 403 too: any page, even one served
    from another port of this machine, could otherwise post work to it (a browser sends the Origin
    with every cross-origin POST). Requests without either header (curl, an LMS's client) pass. Does
    nothing while tokens are set: then every request needs one, and the web page's cookie is
    SameSite=Strict."""

    def __init__(self, app: ASGIApp, tokens: Callable[[], list[str]], names: Collection[str] = ()) -> None:
        self.app = app
        self.tokens = tokens
        self.names = {"localhost", *(name.lower().strip("[]") for name in names)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.tokens():
            connection = HTTPConnection(scope)
            refusal = self.refusal(connection.headers.get("host"), connection.headers.get("origin"), scope["scheme"])
            if refusal is not None:
                await error_response(refusal, connection.url.path)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, host: str | None, origin: str | None, scheme: str = "http") -> ProblemError | None:
        addressed = _host_and_port(f"//{host}", scheme) if host is not None else None
        if addressed is not None and not self.is_local(addressed[0]):
            return ProblemError(
                403,
                "This service runs without API tokens, so it answers only requests addressed to this machine "
                "(localhost or a loopback address); set GRADER_API_TOKENS to serve it under another name.",
                kind="not-local",
            )
        # "null" (a sandboxed page) is no address either
        if origin is not None and (addressed is None or _host_and_port(origin) != addressed):
            return ProblemError(
                403,
                "This service runs without API tokens, so it does not answer requests that a web page of another "
                "site, or of another port, sends; set GRADER_API_TOKENS to let other pages use it.",
                kind="not-local",
            )
        return None

    def is_local(self, name: str | None) -> bool:
        if not name:
            return False
        if name in self.names:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(url: str, scheme: str | None = None) -> tuple[str | None, int | None]:
    """(host name, port) of a URL or `//host:port`, the scheme's port when it names none; (None, None)
    when it is not one ("[::1", a port that is not a number, "null")."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(scheme or parts.scheme)
    except ValueError:
        return None, None
    return (parts.hostname or None), port
