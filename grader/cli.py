"""The command line: `grader grade`, `grader doctor`, and the service and worker entry points."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from grader import __version__
from grader.settings import get_settings


class UserError(click.ClickException):
    """A problem the user can fix, shown as one sentence and exit status 2."""

    exit_code = 2


def _load_assignment(path: Path | None):
    from grader.engine.assignment import AssignmentError, load_assignment

    try:
        return load_assignment(path or get_settings().assignment_dir)
    except AssignmentError as error:
        raise UserError(str(error)) from error


def _make_grader(assignment_dir: Path | None, workers: int | None, insecure: bool):
    from grader.engine.grading import Grader
    from grader.sandbox.isolation import SandboxUnavailable

    settings = get_settings()
    assignment = _load_assignment(assignment_dir)
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


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--assignment", "assignment_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Assignment folder (rubric.toml, cases.py, solution.py). Default: Homework 5.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Sandbox processes (default: one per core).")
@click.option("--insecure-no-sandbox", "insecure", is_flag=True,
              help="DANGEROUS: grade even where student code cannot be cut off from the network.")
def grade(paths: tuple[Path, ...], output_format: str, assignment_dir: Path | None, workers: int | None,
          insecure: bool) -> None:
    """Grade submissions: .py files (a report each), printed as a table or JSON."""
    from grader.export.text import class_table, submission_text
    from grader.intake import IntakeError, read_inputs

    assignment = _load_assignment(assignment_dir)
    try:
        intake = read_inputs(list(paths), filename=assignment.rubric.filename)
    except IntakeError as error:
        raise UserError(str(error)) from error
    with _make_grader(assignment_dir, workers, insecure) as grader:
        gradable = [(s.key, s.source) for s in intake.submissions if s.source is not None]
        reports = grader.grade_many(gradable)
    if output_format == "json":
        if len(paths) == 1 and len(reports) == 1 and intake.layout == "files":
            payload: object = reports[0].model_dump(mode="json")
        else:
            payload = {"submissions": [r.model_dump(mode="json") for r in reports]}
        click.echo(json.dumps(payload, indent=2))
        return
    if len(reports) == 1:
        click.echo(submission_text(reports[0]))
    else:
        click.echo(class_table(reports))


@main.command()
def doctor() -> None:
    """Show which sandbox layers work on this host."""
    from grader.sandbox.isolation import SandboxUnavailable
    from grader.sandbox.pool import SandboxPool

    try:
        pool = SandboxPool(1, allow_insecure=True)
    except SandboxUnavailable as error:
        raise click.ClickException(str(error)) from error
    with pool:
        for layer, on in pool.layers.items():
            click.echo(f"{layer:18} {'yes' if on else 'NO'}")
        if not pool.layers.get("no_network"):
            click.echo("The minimum isolation is missing: grading refuses to run without --insecure-no-sandbox.")
            sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
def serve(host: str, port: int) -> None:
    """Run the HTTP API (see /docs); listens on loopback unless GRADER_API_TOKENS is set."""
    from grader.service.server import StartError, UnsafeBind, check_bind
    from grader.service.server import serve as run_server

    settings = get_settings()
    try:
        check_bind(host, settings)
    except UnsafeBind as error:
        raise UserError(str(error)) from error
    try:
        run_server(host, port, settings)
    except StartError as error:
        raise click.ClickException(str(error)) from error


@main.command()
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Submissions graded at once, one sandbox process each (default: GRADER_WORKERS, else one per core).")
@click.option("--insecure-no-sandbox", "insecure", is_flag=True,
              help="DANGEROUS: grade even where student code cannot be cut off from the network.")
@click.option("--heartbeat-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File touched every few seconds while the worker runs (default /tmp/grader-worker.heartbeat).")
@click.option("--check", is_flag=True,
              help="Do not grade: exit 0 if a worker here touched its heartbeat file in the last minute (healthcheck).")
def worker(threads: int | None, insecure: bool, heartbeat_file: Path | None, check: bool) -> None:
    """Grade work items from the Redis queue (GRADER_QUEUE_URL) into the database (GRADER_DATABASE_URL)."""
    from grader.queue.worker import HEARTBEAT_FILE, heartbeat_is_fresh

    heartbeat = heartbeat_file or HEARTBEAT_FILE
    if check:
        if not heartbeat_is_fresh(heartbeat):
            raise click.ClickException(f"no worker has touched {heartbeat} in the last minute")
        click.echo("worker alive")
        return
    _run_worker(threads, insecure, heartbeat)


def _run_worker(threads: int | None, insecure: bool, heartbeat: Path) -> None:
    from grader.queue.broker import QueueConfig
    from grader.queue.worker import QueueWorker
    from grader.sandbox.isolation import SandboxUnavailable

    settings = get_settings()
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
    queue_worker = QueueWorker(settings, QueueConfig.from_settings(settings), threads=threads,
                               heartbeat_file=heartbeat)
    try:
        queue_worker.run_forever()
    except SandboxUnavailable as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    main()
