"""Feedback a TA can hand back: one Markdown file per student, in a folder or a zip."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from grader.export.text import fmt_points
from grader.intake.results import StudentResult


def _text(value: str) -> str:
    """Messages quote student code and exceptions: keep them from turning into Markdown or HTML."""
    return re.sub(r"([\\`*<>\[\]|])", r"\\\1", value.replace("\r", "").replace("\n", " "))


def feedback_markdown(result: StudentResult, *, title: str) -> str:
    lines = [f"# {_text(title)}", ""]
    who = f"{result.name} ({result.key})" if result.name else result.key
    lines.append(f"**Student:** {_text(who)}  ")
    if result.attempt:
        lines.append(f"**Attempt:** {_text(result.attempt)}  ")
    if result.late:
        lines.append("**Submitted late**  ")
    report = result.report
    if report is None:
        lines += ["", f"**Score:** not graded ({fmt_points(result.max_score)} points possible)", ""]
        lines.append(f"Nothing could be graded: {_text(result.detail or result.status)}.")
        for note in result.warnings:
            lines.append(f"- {_text(note)}")
        return "\n".join(lines) + "\n"
    lines += ["", f"**Score:** {fmt_points(report.score)} / {fmt_points(report.max_score)}", ""]
    if report.errors:
        lines.append("## Errors")
        lines.append("")
        lines += [f"- {_text(error)}" for error in report.errors]
        lines.append("")
    lines += ["## Problems", "", "| Problem | Score |", "|---|---|"]
    lines += [f"| {p.number}. {_text(p.title)} | {fmt_points(p.score)} / {fmt_points(p.max_score)} |"
              for p in report.problems]
    for problem in report.problems:
        lines += ["", f"### Problem {problem.number}: {_text(problem.title)}", ""]
        for check in problem.checks:
            mark = "passed" if check.passed else "failed"
            lines.append(f"- **{_text(check.name)}** ({mark}): {fmt_points(check.score)} / "
                         f"{fmt_points(check.max_score)}")
            if check.message and not check.passed:
                lines.append(f"  - {_text(check.message)}")
            if check.hint and not check.passed:
                lines.append(f"  - Hint: {_text(check.hint)}")
    if report.warnings:
        lines += ["", "## Notes", ""]
        lines += [f"- {_text(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def feedback_filename(key: str, taken: set[str], name: str | None = None) -> str:
    """A file name a TA can match to the student, and that no archive or file system can misread (no
    `/`, no `..`): the student's key, letters of any script kept (李雷.md, José_Núñez.md); a bare
    number (a Canvas user id) gets the student's name before it."""
    label = f"{name}_{key}" if name and key.isdigit() else key
    base = re.sub(r"[^\w.-]+", "_", label)[:120].strip("._") or "student"
    filename = f"{base}.md"
    n = 2
    while filename.lower() in taken:
        filename = f"{base}-{n}.md"
        n += 1
    taken.add(filename.lower())
    return filename


def feedback_names(results: Sequence[StudentResult]) -> list[str]:
    """Each student's feedback file name, in order, unique within the class."""
    taken: set[str] = set()
    return [feedback_filename(r.key, taken, r.name) for r in results]


def feedback_files(results: Sequence[StudentResult], *, title: str) -> dict[str, str]:
    return {name: feedback_markdown(r, title=title) for name, r in zip(feedback_names(results), results, strict=True)}


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def feedback_zip(results: Sequence[StudentResult], *, title: str) -> bytes:
    return _zip(feedback_files(results, title=title))


def write_feedback(results: Sequence[StudentResult], destination: Path, *, title: str) -> int:
    """Write a `.zip` when the destination is named so, else a folder of `.md` files; returns how many.
    Each file appears whole or not at all (written aside, then renamed into place)."""
    files = feedback_files(results, title=title)
    if destination.suffix.lower() == ".zip":
        write_atomically(destination, _zip(files))
    else:
        destination.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_atomically(destination / name, text.encode("utf-8"))
    return len(files)


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it for an instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: an interrupted
    write leaves the old file or none, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
