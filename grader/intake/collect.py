"""Reading submissions from the paths given on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class IntakeError(Exception):
    """The input cannot be read as submissions; the message says why in one sentence."""


@dataclass
class Submission:
    """One student's work: the source to grade, or the reason there is none."""

    key: str
    source: bytes | None
    name: str | None = None
    status: str = "ok"
    detail: str = ""
    late: bool = False
    origin: str = ""


@dataclass
class Intake:
    layout: str
    submissions: list[Submission]
    warnings: list[str] = field(default_factory=list)


def read_inputs(paths: list[Path], *, filename: str = "layers.py") -> Intake:
    submissions = []
    for path in paths:
        if not path.exists():
            raise IntakeError(f"{path} does not exist")
        if path.is_dir() or path.suffix != ".py":
            raise IntakeError(f"{path} is not a .py file")
        try:
            source = path.read_bytes()
        except OSError as error:
            raise IntakeError(f"{path} cannot be read: {error.strerror}") from error
        submissions.append(Submission(key=path.stem, source=source, origin=str(path)))
    return Intake(layout="files", submissions=submissions)
