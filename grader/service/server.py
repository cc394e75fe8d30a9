"""Running the app under uvicorn, refusing to listen beyond loopback without tokens."""

from __future__ import annotations

import ipaddress
import socket

from grader.settings import Settings


class UnsafeBind(Exception):
    """Listening on this address without API tokens would expose grading to the network."""


class StartError(Exception):
    """The database, assignment or sandbox cannot be brought up; the message says which."""


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


MIN_TOKEN_LENGTH = 16  # beyond loopback: a shorter token could be guessed by anyone who can reach the port
_HOW_TO_MAKE_ONE = "GRADER_API_TOKENS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"


def check_bind(host: str, settings: Settings) -> None:
    if is_loopback(host):
        return
    if not settings.tokens:
        raise UnsafeBind(
            f"refusing to listen on {host} without API tokens: set GRADER_API_TOKENS to one or more secret tokens "
            f"(comma-separated), e.g. {_HOW_TO_MAKE_ONE}, or listen on 127.0.0.1"
        )
    short = sum(len(token) < MIN_TOKEN_LENGTH for token in settings.tokens)
    if short:
        raise UnsafeBind(
            f"refusing to listen on {host}: {short} of the tokens in GRADER_API_TOKENS "
            f"{'is' if short == 1 else 'are'} shorter than {MIN_TOKEN_LENGTH} characters, which anyone who can "
            f"reach the service could guess; use long random tokens, e.g. {_HOW_TO_MAKE_ONE}"
        )


def serve(host: str, port: int, settings: Settings) -> None:
    import uvicorn

    from grader.engine.assignment import AssignmentError
    from grader.sandbox.isolation import SandboxUnavailable
    from grader.service.app import create_app
    from grader.store.database import DatabaseError

    check_bind(host, settings)
    app = create_app(settings, local_names=[host])
    try:
        # started before uvicorn so that a failure is one sentence, not a startup traceback
        app.state.service.start()
    except (DatabaseError, AssignmentError, SandboxUnavailable, OSError) as error:
        raise StartError(str(error)) from error
    # uvicorn's access log shows method, path and status only: tokens travel in headers, never logged.
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False)
