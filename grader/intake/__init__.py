"""Turning what a TA or an LMS hands over into submissions: one per student, read safely."""

from grader.intake.archive import ArchiveError, ArchiveLimits, SafeArchive
from grader.intake.collect import Intake, Submission, read_inputs
from grader.intake.errors import IntakeError
from grader.intake.results import StudentResult, grade_intake

__all__ = [
    "ArchiveError",
    "ArchiveLimits",
    "Intake",
    "IntakeError",
    "SafeArchive",
    "StudentResult",
    "Submission",
    "grade_intake",
    "read_inputs",
]
