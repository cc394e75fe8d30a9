"""The one exception intake raises: input that cannot be read as submissions."""

from __future__ import annotations


class IntakeError(Exception):
    """The input cannot be read as submissions; the message says why in one sentence."""
