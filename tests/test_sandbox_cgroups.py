"""Telling a dead grader's leftovers from anything else by name alone."""

from __future__ import annotations

import os

from grader.sandbox.cgroups import PREFIX, stale


def test_only_a_dead_graders_names_are_stale():
    assert not stale(f"{PREFIX}{os.getpid()}.0")  # this process is alive
    assert stale(f"{PREFIX}999999999.0")  # beyond any pid this kernel hands out
    assert not stale("something-else.123.0")


def test_a_name_someone_else_made_up_is_not_stale_and_does_not_raise():
    """Anyone can make a folder in /tmp: "²" passes str.isdigit() but int() refuses it."""
    for owner in ("\u00b2", "\u0663", "12a", ""):
        assert not stale(f"{PREFIX}{owner}.0")
