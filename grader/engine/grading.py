"""Grading a submission: static policy checks, one sandboxed run, then scoring in the trusted process."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grader
from grader.engine.assignment import Assignment, load_assignment
from grader.engine.plan import Plan, build_plan
from grader.engine.policy import SourceProblem, find_forbidden_imports, parse_source
from grader.engine.report import CheckResult, ProblemResult, SubmissionReport
from grader.engine.scoring import LIMIT_KINDS, Scorer, describe_limit, why_no_terminal
from grader.sandbox.isolation import Limits
from grader.sandbox.pool import Job, RunResult, SandboxPool, ZygoteDied

MAX_SOURCE_BYTES = 1024 * 1024


def sandbox_hidden_paths(assignment: Assignment) -> list[str]:
    """What the sandbox must never show: the assignment, every other one, the grader's own code, and
    the installed packages the rubric forbids (when importing one scores 0)."""
    import reference

    policy = assignment.rubric.policy
    forbidden = forbidden_package_paths(policy.forbidden_imports) if policy.forbidden_action == "zero" else []
    return sorted({str(assignment.path), str(Path(reference.__file__).parent), str(Path(grader.__file__).parent),
                   *forbidden})


def forbidden_package_paths(names: Iterable[str]) -> list[str]:
    """Where the installed top-level packages among `names` live. The run's import blocker is in the
    student's own process, which can take it out of `sys.meta_path` and import by a computed name;
    with the files hidden there is nothing to import. A forbidden submodule (`numpy.linalg`) cannot
    be hidden without its package, and numpy never is: those rest on the blocker and the static check."""
    paths: set[str] = set()
    for name in names:
        if "." in name or name == "numpy":
            continue
        for entry in sys.path:  # every copy: a package installed twice is found once per folder
            try:
                spec = importlib.machinery.PathFinder.find_spec(name, [entry or "."])  # finds, imports nothing
            except (ImportError, ValueError):
                continue
            if spec is None:
                continue
            if spec.submodule_search_locations:
                paths.update(str(Path(location)) for location in spec.submodule_search_locations)
            elif spec.origin and spec.has_location:
                origin = Path(spec.origin)
                paths.add(str(origin))
                # and its compiled copies, which Python (or a student's own loader) reads in its place
                stem = origin.name.split(".")[0]
                paths.update(str(p) for p in origin.parent.glob(f"__pycache__/{stem}.*.pyc"))
                paths.update(str(p) for p in origin.parent.glob(f"{stem}.pyc"))
    return sorted(paths)


class Grader:
    """Grades sources against one assignment; owns the sandbox pool it runs them in."""

    def __init__(
        self,
        assignment: Assignment | None = None,
        *,
        pool: SandboxPool | None = None,
        workers: int | None = None,
        seed: int | None = None,
        limits: Limits | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.assignment = assignment or load_assignment()
        rubric = self.assignment.rubric
        self.seed = rubric.seed if seed is None else seed
        self.limits = limits or Limits(
            time_limit=rubric.limits.time_limit,
            import_time_limit=rubric.limits.import_time_limit,
            memory_limit_mb=rubric.limits.memory_limit_mb,
        )
        self.plan: Plan = build_plan(self.assignment, self.seed)
        self.owns_pool = pool is None
        self.pool = pool or SandboxPool(
            workers or os.cpu_count() or 1,
            hidden_paths=sandbox_hidden_paths(self.assignment),
            allow_insecure=allow_insecure,
        )

    @property
    def layers(self) -> dict[str, bool]:
        return self.pool.layers

    def grade(self, source: bytes, student: str | None = None) -> SubmissionReport:
        started = time.monotonic()
        report = self._grade(source)
        report.student = student
        report.seconds = round(time.monotonic() - started, 4)
        return report

    def _grade(self, source: bytes) -> SubmissionReport:
        rubric = self.assignment.rubric
        filename = rubric.filename
        if len(source) > MAX_SOURCE_BYTES:
            return self.zero(f"{filename} is larger than {MAX_SOURCE_BYTES // 1024} KB; not graded")
        parsed = parse_source(source, filename, rubric.policy.forbidden_imports)
        if isinstance(parsed, SourceProblem):
            return self.zero(parsed.message)
        warnings = []
        violations = find_forbidden_imports(parsed, rubric.policy.forbidden_imports)
        code = parsed.code
        del parsed  # its syntax tree (hundreds of MB for some 1 MB files) is not kept through the run
        if violations:
            described = [f"{filename} {v.describe()}" for v in violations]
            if rubric.policy.forbidden_action == "zero":
                report = self.zero(described[0] + "; the whole submission scores 0", more_errors=described[1:])
                report.policy_violation = True
                return report
            warnings.extend(described)
        try:
            # the file itself goes along only to code that could look at it: 0.2 ms a run otherwise
            run = self.run(code, source if b"__file__" in source or b"inspect" in source else b"")
        except ZygoteDied:
            return self.zero("the sandbox failed twice while running this submission, so it was not graded")
        if run.import_error is not None:
            return self.zero(self.import_message(run.import_error), limits_hit=self.import_limits(run.import_error))
        scorer = Scorer(self.assignment, self.plan, run, self.limits, filename)
        problems = scorer.score()
        return self.report(problems, warnings=warnings + scorer.warnings, limits_hit=scorer.limits_hit)

    def run(self, code: bytes, source: bytes = b"") -> RunResult:
        """Run a submission compiled by `parse_source` (marshalled) in the sandbox; `source`, the file
        as submitted, is put where its `__file__` says it is."""
        job = Job(
            code=code,
            source=source,
            calls=self.plan.calls,
            arrays=self.plan.arrays,
            limits=self.limits,
            module=Path(self.assignment.rubric.filename).stem,
            filename=self.assignment.rubric.filename,
            forbidden=self.assignment.rubric.policy.forbidden_imports,
        )
        try:
            return self.pool.run(job)
        except ZygoteDied:
            # A zygote that died is replaced; the submission gets one more try on a fresh one.
            return self.pool.run(job)

    def import_message(self, error: dict[str, object]) -> str:
        filename = self.assignment.rubric.filename
        kind = error.get("type", "error")
        message = error.get("message", "")
        line = error.get("line")
        at = f" (line {line})" if line else ""
        breach = describe_limit(str(kind), self.limits)
        if breach:
            return f"{filename} could not be imported: {breach}"
        if kind in ("timeout", "exit", "crash", "killed", "protocol", "lost"):
            return f"{filename} could not be imported: it {message}"
        return f"{filename} could not be imported: {kind}: {message}{at}{why_no_terminal(str(kind), str(message))}"

    def import_limits(self, error: dict[str, object]) -> list[str]:
        limit = LIMIT_KINDS.get(str(error.get("type")))
        return [limit] if limit else []

    def zero(
        self, error: str, *, more_errors: Iterable[str] = (), limits_hit: list[str] | None = None
    ) -> SubmissionReport:
        problems = [
            ProblemResult(
                number=problem.number,
                title=problem.title,
                score=0.0,
                max_score=problem.max_score,
                checks=[
                    CheckResult(
                        name=c.name, score=0.0, max_score=c.points, passed=False, message=f"not graded: {error}"
                    )
                    for c in problem.checks
                ],
            )
            for problem in self.assignment.rubric.problems
        ]
        return self.report(problems, errors=[error, *more_errors], limits_hit=limits_hit or [])

    def report(
        self,
        problems: list[ProblemResult],
        *,
        errors: list[str] | None = None,
        warnings: list[str] | None = None,
        limits_hit: list[str] | None = None,
    ) -> SubmissionReport:
        rubric = self.assignment.rubric
        return SubmissionReport(
            score=sum(p.score for p in problems),
            max_score=rubric.max_score,
            problems=problems,
            errors=errors or [],
            warnings=warnings or [],
            limits_hit=limits_hit or [],
            assignment=rubric.assignment,
            rubric_version=rubric.version,
            grader_version=grader.__version__,
            seed=self.seed,
        )

    def grade_many(
        self,
        sources: list[tuple[str, bytes]],
        progress: Callable[[int, int, SubmissionReport], None] | None = None,
    ) -> list[SubmissionReport]:
        """Grade (student, source) pairs on every zygote at once; the reports come back in input order.

        One thread per zygote takes the next pair whenever it is free. `progress` is called as each
        report comes in, one call at a time (from those threads). An error in grading, or Ctrl-C,
        stops the pairs not yet started: those already running finish, then it is raised here.
        """
        results: list[SubmissionReport | None] = [None] * len(sources)
        lock = threading.Lock()
        queue = iter(enumerate(sources))
        done = 0
        stopped: list[BaseException] = []

        def work() -> None:
            nonlocal done
            while True:
                with lock:
                    item = None if stopped else next(queue, None)
                if item is None:
                    return
                index, (student, source) = item
                try:
                    report = self.grade(source, student)
                    with lock:
                        results[index] = report
                        done += 1
                        if progress is not None and not stopped:
                            progress(done, len(sources), report)
                except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
                    with lock:
                        stopped.append(error)
                    return

        workers = [threading.Thread(target=work, daemon=True) for _ in range(min(self.pool.size, len(sources)))]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)  # in short waits: Ctrl-C reaches this thread
        except BaseException as interrupt:
            with lock:
                stopped.append(interrupt)
            for worker in workers:
                worker.join()
            raise
        if stopped:
            raise stopped[0]
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self.owns_pool:
            self.pool.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
