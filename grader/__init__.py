"""An auto-grader for numpy homework that runs every submission in a sandbox."""

__version__ = "0.1.0"
