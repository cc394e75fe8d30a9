"""The HTTP service: the API an LMS talks to and the web page builds on."""

from grader.service.app import create_app

__all__ = ["create_app"]
