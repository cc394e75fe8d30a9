"""The HTTP service: the API an LMS talks to and the web page builds on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grader.service.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `grader serve --host ...` can refuse an unsafe bind before FastAPI and numpy load.
    if name == "create_app":
        from grader.service.app import create_app

        return create_app
    raise AttributeError(name)
