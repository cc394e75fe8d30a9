"""Zips shaped like what TAs get: a student's zip, a class folder, Blackboard and Canvas downloads.

Tests build their own fixtures with these, small and in a temporary folder.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import EXAMPLES

Content = bytes | str


def example(name: str) -> bytes:
    return (EXAMPLES / f"{name}.py").read_bytes()


def zip_bytes(entries: Mapping[str, Content], *, symlinks: Mapping[str, str] | None = None) -> bytes:
    """A zip of the given entries (a name ending in "/" is a folder); `symlinks` maps names to targets."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, content.encode() if isinstance(content, str) else content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def write_zip(path: Path, entries: Mapping[str, Content], **kwargs: Mapping[str, str]) -> Path:
    path.write_bytes(zip_bytes(entries, **kwargs))
    return path


def receipt(name: str, username: str, assignment: str, stamp: str, files: list[str], *,
            grade_label: str = "Current Grade") -> str:
    """A Blackboard attempt receipt; `files` are original names, stored under Blackboard's naming."""
    lines = [
        f"Name: {name} ({username})",
        f"Assignment: {assignment}",
        "Date Submitted: Sunday, April 2, 2023 11:58:01 PM CDT",
        f"{grade_label}: Needs Grading",
        "",
        "Submission Field:",
        "There is no student submission text data for this assignment.",
        "",
        "Comments:",
        "There are no student comments for this assignment.",
        "",
        "Files:",
    ]
    if files:
        for original in files:
            lines.append(f"\tOriginal filename: {original}")
            lines.append(f"\tFilename: {assignment}_{username}_attempt_{stamp}_{original}")
    else:
        lines.append("No files were attached to this submission.")
    return "\n".join(lines) + "\n"


def blackboard_entries(assignment: str, attempts: list[tuple[str, str, str, dict[str, Content]]], *,
                       grade_label: str = "Current Grade") -> dict[str, Content]:
    """Entries of a "Download Assignment" zip: (username, full name, stamp, {original name: content})."""
    entries: dict[str, Content] = {}
    for username, name, stamp, files in attempts:
        prefix = f"{assignment}_{username}_attempt_{stamp}"
        entries[f"{prefix}.txt"] = receipt(name, username, assignment, stamp, list(files), grade_label=grade_label)
        for original, content in files.items():
            entries[f"{prefix}_{original}"] = content
    return entries
