"""Assignments the grader knows: each folder holds one assignment's functions, cases, reference and rubric."""
