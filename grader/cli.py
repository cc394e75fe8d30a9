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


def _load_assignment(path: Path | None):  # untyped: keeps engine imports lazy for a fast --help
    from grader.engine.assignment import AssignmentError, load_assignment

    try:
        return load_assignment(path or get_settings().assignment_dir)
    except AssignmentError as error:
        raise UserError(str(error)) from error


def _make_grader(assignment_dir: Path | None, workers: int | None, insecure: bool):  # untyped: as above
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


if __name__ == "__main__":
    main()
