"""The command line: `grader grade`, `grader doctor`, and the service and worker entry points."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from grader import __version__
from grader.settings import Settings, get_settings

if TYPE_CHECKING:  # engine imports stay lazy so --help is fast
    from grader.engine.grading import Grader
    from grader.engine.rubric import Rubric
    from grader.intake import Intake, StudentResult


class UserError(click.ClickException):
    """A problem the user can fix, shown as one sentence and exit status 2."""

    exit_code = 2


class Interrupted(click.ClickException):
    """Ctrl-C: one sentence on what was (not) written, and the shell's usual status for it."""

    exit_code = 130

    def show(self, file: IO[Any] | None = None) -> None:
        _note(self.message)


def _note(message: str) -> None:
    """A line for the person at the terminal, on standard error. Once nobody reads it any more (`2>&1 |
    head` closed the pipe), it and every later one are dropped: the files a command writes after its
    notes must not be lost to them."""
    try:
        click.echo(message, err=True)
    except BrokenPipeError:
        sys.stderr = open(os.devnull, "w")  # the rest of this run's notes go nowhere


def _settings() -> Settings:
    """The GRADER_* configuration, or one sentence naming each variable that is wrong (never its value:
    some are secrets)."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as error:
        problems = "; ".join(
            f"GRADER_{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise UserError(f"invalid configuration: {problems}") from error


def _load_assignment(path: Path | None):
    from grader.engine.assignment import AssignmentError, load_assignment

    try:
        return load_assignment(path or _settings().assignment_dir)
    except AssignmentError as error:
        raise UserError(str(error)) from error


def _read_intake(paths: tuple[Path, ...], filename: str, layout: str):
    from grader.intake import IntakeError, read_inputs

    try:
        return read_inputs(list(paths), filename=filename, layout=None if layout == "auto" else layout)
    except IntakeError as error:
        raise UserError(str(error)) from error


def _make_grader(assignment, workers: int | None, insecure: bool):
    from grader.engine.grading import Grader
    from grader.sandbox.isolation import SandboxUnavailable

    settings = _settings()
    try:
        return Grader(
            assignment,
            workers=workers or settings.workers or None,
            allow_insecure=insecure or settings.insecure_no_sandbox,
        )
    except SandboxUnavailable as error:
        raise click.ClickException(str(error)) from error


@click.group()
@click.version_option(__version__, prog_name="grader")
def main() -> None:
    """Grade numpy homework in a sandbox: per-problem scores with feedback students can act on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # import-time chatter, not news


LAYOUT_CHOICES = ["auto", "files", "student", "students", "blackboard", "canvas"]
# Gradescope's visibility values (grader.export.gradescope.VISIBILITIES, kept here so --help stays fast)
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--assignment", "assignment_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Assignment folder (rubric.toml, cases.py, solution.py). Default: Homework 5.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Sandbox processes (default: one per core).")
@click.option("--insecure-no-sandbox", "insecure", is_flag=True,
              help="DANGEROUS: grade even where student code cannot be cut off from the network.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True,
              help="How the input is laid out; detected unless given.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write one row per student: key, name, total, problem scores, status, summary.")
@click.option("--export", "export_format", type=click.Choice(["blackboard", "canvas"]), default=None,
              help="Write a gradebook file the LMS imports (see --output, --column-id).")
@click.option("--output", "export_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where --export writes (default: grades-blackboard.csv or grades-canvas.csv).")
@click.option("--column-id", default=None,
              help="Blackboard Grade Center column id, or Canvas assignment id, to update an existing column.")
@click.option("--assignment-name", default=None,
              help="The assignment's name in the gradebook (default: from the LMS download, else the rubric title).")
@click.option("--missing-as-zero", is_flag=True,
              help="Give students with nothing to grade 0 in --export files (default: leave their cell blank).")
@click.option("--feedback", "feedback_path", type=click.Path(path_type=Path), default=None,
              help="Write one Markdown feedback file per student into this folder, or this .zip.")
def grade(paths: tuple[Path, ...], output_format: str, assignment_dir: Path | None, workers: int | None,
          insecure: bool, layout: str, csv_path: Path | None, export_format: str | None, export_path: Path | None,
          column_id: str | None, assignment_name: str | None, missing_as_zero: bool,
          feedback_path: Path | None) -> None:
    """Grade a .py, a student's zip or folder, a class folder or zip, or a Blackboard or Canvas download."""
    from grader.export.gradebook import other_lms_warning
    from grader.export.text import class_summary, results_table, submission_text

    assignment = _load_assignment(assignment_dir)
    rubric = assignment.rubric
    _check_outputs(csv_path, _export_target(export_format, export_path), feedback_path)
    intake = _read_intake(paths, rubric.filename, layout)
    single_file = len(paths) == 1 and intake.layout == "files"
    if not single_file:
        count = len(intake.submissions)
        _note(f"layout: {intake.layout} ({count} student{'' if count == 1 else 's'})")
    for warning in intake.warnings:
        _note(f"warning: {warning}")
    mismatch = other_lms_warning(intake.layout, export_format) if export_format is not None else None
    if mismatch is not None:
        _note(f"warning: {mismatch}")
    started = time.monotonic()
    try:
        with _make_grader(assignment, workers, insecure) as grader:
            ready = time.monotonic()
            results = _grade_with_progress(grader, intake)
            graded = time.monotonic() - ready
            processes = grader.pool.size
    except KeyboardInterrupt:
        raise Interrupted("interrupted while grading: nothing was written") from None
    if not single_file:
        _note(f"graded in {graded:.2f} s by {processes} sandbox processes "
              f"(starting them took {ready - started:.2f} s)")
    name = assignment_name or intake.assignment or rubric.title
    # the files the TA asked for first: a closed standard output (`| head`) must not lose them
    try:
        _write_exports(results, rubric, name, csv_path=csv_path, export_format=export_format,
                       export_path=export_path, column_id=column_id, missing_as_zero=missing_as_zero,
                       feedback_path=feedback_path)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while writing: each file named above as written is whole; "
                          "the others were not written (a feedback folder may hold only some students)") from None
    problems = [(p.number, p.title, p.max_score) for p in rubric.problems]
    one = results[0] if len(results) == 1 else None
    try:
        if output_format == "json":
            if single_file and one is not None and one.report is not None:
                payload: object = one.report.model_dump(mode="json")
            else:
                payload = {"layout": intake.layout, "assignment": intake.assignment,
                           "submissions": [r.as_json() for r in results]}
            click.echo(json.dumps(payload, indent=2))
            if _interactive() and one is None:
                _note(class_summary(results, problems))
        elif one is not None and one.report is not None:
            click.echo(submission_text(one.report, title=one.key))
        else:
            click.echo(results_table(results, [n for n, _, _ in problems]))
            click.echo("")
            click.echo(class_summary(results, problems))
    except BrokenPipeError:  # the reader had enough (`| head`): the files are written, grading ran
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor fail flushing at exit


def _export_target(export_format: str | None, export_path: Path | None) -> Path | None:
    """Where `--export` writes: `--output`, else grades-<lms>.csv."""
    if export_format is None:
        return None
    return export_path or Path(f"grades-{export_format}.csv")


def _check_outputs(csv_path: Path | None, export_path: Path | None, feedback_path: Path | None) -> None:
    """Refuse, before any grading, outputs that could not be written or would overwrite each other."""
    files = [p for p in (csv_path, export_path) if p is not None and str(p) != "-"]
    if len(files) == 2 and files[0].resolve() == files[1].resolve():
        raise UserError(f"--csv and --output both name {files[0]}: give them different files")
    for path in files:
        if path.is_dir():
            raise UserError(f"{path} is a folder; name a file to write")
        folder = next((p for p in path.resolve().parents if p.exists()), None)
        try:  # a file made and removed at once answers for permissions, read-only mounts, /proc alike
            if folder is None:
                raise OSError
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            where = folder or path.parent
            raise UserError(f"cannot write {path}: {where} is not a folder this user can write in") from None
    if feedback_path is not None and feedback_path.suffix.lower() != ".zip" and feedback_path.is_file():
        raise UserError(f"--feedback {feedback_path} is a file; name a folder (or a .zip) for the feedback files")


def _interactive() -> bool:
    """Whether a person watches standard error: then a class gets a progress bar and a summary there."""
    return sys.stderr.isatty()


def _grade_with_progress(grader: Grader, intake: Intake) -> list[StudentResult]:
    """Grade a class; on a terminal, with a progress bar on standard error."""
    from grader.intake import grade_intake

    total = len(intake.submissions)
    if total < 2 or not _interactive():
        return grade_intake(grader, intake)
    with click.progressbar(length=total, label="grading", file=sys.stderr, show_pos=True) as bar:
        return grade_intake(grader, intake, progress=lambda done, _total, _result: bar.update(1))


def _write_exports(results: list[StudentResult], rubric: Rubric, assignment_name: str, *, csv_path: Path | None,
                   export_format: str | None, export_path: Path | None, column_id: str | None,
                   missing_as_zero: bool, feedback_path: Path | None) -> None:
    from grader.export.feedback import feedback_names, write_feedback
    from grader.export.gradebook import blackboard_csv, canvas_csv, class_csv

    try:
        if csv_path is not None:
            _write_text(csv_path, class_csv(results, rubric))
        target = _export_target(export_format, export_path)
        if target is not None:
            exporter = blackboard_csv if export_format == "blackboard" else canvas_csv
            text = exporter(results, assignment=assignment_name, max_score=rubric.max_score,
                            **({"column_id": column_id} if export_format == "blackboard"
                               else {"assignment_id": column_id}),
                            missing_as_zero=missing_as_zero)
            _write_text(target, text)
        if feedback_path is not None:
            before = {p.name for p in feedback_path.glob("*.md")} if feedback_path.is_dir() else set()
            count = write_feedback(results, feedback_path, title=f"Feedback: {assignment_name}")
            _note(f"wrote {count} feedback files to {feedback_path}")
            stale = sorted(before - set(feedback_names(results)))
            if stale:  # a TA zipping the folder for the students would send these too
                _note(f"warning: {feedback_path} also holds {len(stale)} feedback file(s) this run did not "
                      f"write (an earlier run's?): {', '.join(stale[:5])}")
    except OSError as error:
        raise UserError(f"cannot write {error.filename}: {error.strerror}") from error


def _write_text(path: Path, text: str) -> None:
    if str(path) == "-":
        click.echo(text, nl=False)
        return
    from grader.export.feedback import write_atomically

    write_atomically(path, text.encode("utf-8"))  # the CSV's own CRLF row endings, whole or not at all
    _note(f"wrote {path}")


@main.command()
@click.option("--submission-dir", type=click.Path(path_type=Path), default=Path("/autograder/submission"),
              show_default=True, help="Where Gradescope puts the student's files.")
@click.option("--results", "results_path", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("/autograder/results/results.json"), show_default=True)
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="visible", show_default=True,
              help="When students see the overall result.")
@click.option("--test-visibility", type=click.Choice(VISIBILITIES), default="visible", show_default=True,
              help="When students see each rubric check.")
@click.option("--assignment", "assignment_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--insecure-no-sandbox", "insecure", is_flag=True,
              help="Grade even where the sandbox cannot isolate (the Gradescope container is then the only wall).")
def gradescope(submission_dir: Path, results_path: Path, visibility: str, test_visibility: str,
               assignment_dir: Path | None, insecure: bool) -> None:
    """Inside a Gradescope autograder: grade the submission and write results.json."""
    from grader.export.gradescope import run_gradescope
    from grader.intake import IntakeError

    with _make_grader(_load_assignment(assignment_dir), 1, insecure) as grader:
        try:
            results = run_gradescope(grader, submission_dir, results_path, visibility=visibility,
                                     test_visibility=test_visibility)
        except IntakeError as error:
            raise UserError(str(error)) from error
        except OSError as error:
            raise UserError(f"cannot write {error.filename}: {error.strerror}") from error
    click.echo(results["output"])


@main.command("gradescope-build")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--assignment", "assignment_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Ship this assignment folder instead of Homework 5.")
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="visible", show_default=True)
@click.option("--test-visibility", type=click.Choice(VISIBILITIES), default="visible", show_default=True)
@click.option("--allow-unsandboxed", is_flag=True,
              help="Grade even if the Gradescope image cannot create namespaces (student code could then "
                   "read the reference solution).")
def gradescope_build(out: Path, assignment_dir: Path | None, visibility: str, test_visibility: str,
                     allow_unsandboxed: bool) -> None:
    """Build the Gradescope autograder zip (setup.sh, run_autograder, this grader)."""
    from grader.export.gradescope import build_autograder_zip

    if assignment_dir is not None:
        _load_assignment(assignment_dir)  # fail here, not on Gradescope
    try:
        names = build_autograder_zip(out, assignment_dir=assignment_dir, visibility=visibility,
                                     test_visibility=test_visibility, allow_unsandboxed=allow_unsandboxed)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or out}: {error.strerror}") from error
    click.echo(f"wrote {out} ({len(names)} files): upload it as the assignment's autograder on Gradescope")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Report pairs where this share of one side's own code is also in the other.")
@click.option("--min-tokens", type=click.IntRange(min=1), default=40, show_default=True,
              help="Ignore pairs sharing fewer tokens than this (short canonical answers look alike).")
@click.option("--starter", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Starter code to exclude (default: submissions/examples/starter.py).")
@click.option("--no-starter", is_flag=True, help="Compare everything, starter code included.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--assignment", "assignment_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def similarity(paths: tuple[Path, ...], threshold: float, min_tokens: int, starter: Path | None, no_starter: bool,
               output_format: str, layout: str, assignment_dir: Path | None) -> None:
    """Pairs of submissions whose code is suspiciously alike, with the line ranges they share."""
    from grader.export.similarity import default_starter, find_similar, similarity_text

    assignment = _load_assignment(assignment_dir)
    intake = _read_intake(paths, assignment.rubric.filename, layout)
    starter_path = None if no_starter else (starter or default_starter())
    if starter_path is None and not no_starter:
        _note("warning: no starter code found; pass --starter FILE so shared starter code is not flagged")
    sources = {s.key: s.source for s in intake.submissions if s.source is not None}
    report = find_similar(sources, starter=starter_path.read_bytes() if starter_path else None,
                          threshold=threshold, min_tokens=min_tokens,
                          starter_name=str(starter_path) if starter_path else None)
    if output_format == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(similarity_text(report))


@main.command()
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
def doctor(output_format: str) -> None:
    """Show which sandbox layers hold on this host, and why any does not."""
    from grader.sandbox.isolation import LAYER_NAMES, MINIMUM, SandboxUnavailable
    from grader.sandbox.pool import SandboxPool

    try:
        pool = SandboxPool(1, allow_insecure=True)
    except SandboxUnavailable as error:
        raise click.ClickException(str(error)) from error
    with pool:
        layers, notes = pool.layers, pool.layer_notes
    missing = [layer for layer in MINIMUM if not layers.get(layer)]
    if output_format == "json":
        click.echo(json.dumps({"layers": layers, "notes": notes, "minimum_holds": not missing}, indent=2))
    else:
        for layer in LAYER_NAMES:
            mark = "yes" if layers.get(layer) else "no"
            note = notes.get(layer, "")
            click.echo(f"{layer:18} {mark:4} {note}".rstrip())
        if missing:
            click.echo(f"The minimum isolation is missing ({', '.join(missing)}): grading refuses to run "
                       "without --insecure-no-sandbox.")
        else:
            click.echo("The minimum isolation (a process per run, rlimits, no network) holds.")
    if missing:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
def serve(host: str, port: int) -> None:
    """Run the HTTP API (see /docs); listens on loopback unless GRADER_API_TOKENS is set."""
    from grader.service.server import StartError, UnsafeBind, check_bind
    from grader.service.server import serve as run_server

    settings = _settings()
    try:
        check_bind(host, settings)
    except UnsafeBind as error:
        raise UserError(str(error)) from error
    try:
        run_server(host, port, settings)
    except StartError as error:
        raise click.ClickException(str(error)) from error


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Sandbox processes, each grading one submission at a time (default: GRADER_WORKERS, else one "
                   "per core).")
@click.option("--insecure-no-sandbox", "insecure", is_flag=True,
              help="DANGEROUS: grade even where student code cannot be cut off from the network.")
@click.option("--heartbeat-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File touched every few seconds while the worker runs and reaches Redis "
                   "(default /tmp/grader-worker.heartbeat).")
@click.option("--check", is_flag=True,
              help="Do not grade: exit 0 if a worker here touched its heartbeat file in the last minute (healthcheck).")
def worker(workers: int | None, insecure: bool, heartbeat_file: Path | None, check: bool) -> None:
    """Grade work items from the Redis queue (GRADER_QUEUE_URL) into the database (GRADER_DATABASE_URL)."""
    from grader.queue.worker import HEARTBEAT_FILE, heartbeat_is_fresh

    heartbeat = heartbeat_file or HEARTBEAT_FILE
    if check:
        if not heartbeat_is_fresh(heartbeat):
            raise click.ClickException(f"no worker has touched {heartbeat} in the last minute")
        click.echo("worker alive")
        return
    _run_worker(workers, insecure, heartbeat)


def _run_worker(sandboxes: int | None, insecure: bool, heartbeat: Path) -> None:
    from grader.queue.broker import QueueConfig
    from grader.queue.worker import QueueWorker, quiet_broker_outages
    from grader.sandbox.isolation import SandboxUnavailable
    from grader.store.database import DatabaseError

    settings = _settings()
    if not settings.queue_url:
        raise UserError("grader worker takes its work from a Redis queue: set GRADER_QUEUE_URL "
                        "(for example redis://127.0.0.1:6379/0) to the same URL as the service's")
    if not settings.database_url:
        logging.getLogger(__name__).warning(
            "GRADER_DATABASE_URL is not set: results go to the SQLite file in %s, which only processes on "
            "this machine can share; point every worker and the service at one PostgreSQL to scale out",
            settings.data_dir)
    if insecure:
        settings = settings.model_copy(update={"insecure_no_sandbox": True})
    quiet_broker_outages()
    queue_worker = QueueWorker(settings, QueueConfig.from_settings(settings), sandboxes=sandboxes,
                               heartbeat_file=heartbeat)
    try:
        queue_worker.run_forever()
    except (SandboxUnavailable, DatabaseError) as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    main()
