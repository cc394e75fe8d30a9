"""Turning what a TA or an LMS hands over into submissions: one per student."""

from grader.intake.collect import Intake, IntakeError, Submission, read_inputs

__all__ = ["Intake", "IntakeError", "Submission", "read_inputs"]
