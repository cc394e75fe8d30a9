"""Turning paths (a .py, a student's zip or folder, a class folder, an LMS download) into one submission each.

`read_inputs` is the single entry point for the command line and the service: it detects the layout,
finds each student's file, and reads every source into memory (archives through `SafeArchive`), so
nothing is left open or on disk once it returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from grader.intake.archive import ArchiveError, ArchiveLimits, is_zip
from grader.intake.errors import IntakeError
from grader.intake.lms import (
    StudentFiles,
    looks_like_blackboard,
    looks_like_canvas,
    read_blackboard,
    read_canvas,
)
from grader.intake.tree import (
    Container,
    Context,
    Item,
    folder_container,
    is_junk,
    is_unsupported_archive,
    is_zip_name,
    listing,
    open_zip_file,
    read_file_capped,
)

# The engine refuses larger sources anyway; reading more would only cost memory.
MAX_SOURCE_BYTES = 1024 * 1024
# Telling a student's scripts from a class's students: at most this many top-level files, their heads only.
MAX_SCRIPTS_EXAMINED = 20
SCRIPT_HEAD_BYTES = 16 * 1024
# The starter keeps layers.py in neuralnet/: when a zip holds several copies, that one is the work.
PREFERRED_FOLDER = "neuralnet"

# Submission.status values: "ok" means there is a source to grade; the others say why there is not.
OK = "ok"
NO_FILES = "no_files"  # nothing was submitted (an empty folder, a Blackboard attempt without a file)
NOT_FOUND = "not_found"  # files were submitted, but none is the file to grade
UNREADABLE = "unreadable"  # an archive or file could not be read (corrupt, encrypted, refused as a bomb)
TOO_LARGE = "too_large"  # the file to grade is larger than MAX_SOURCE_BYTES

LAYOUTS = ("files", "student", "students", "blackboard", "canvas")


@dataclass
class Submission:
    """One student's work: the source to grade, or the reason there is none."""

    key: str
    source: bytes | None
    name: str | None = None
    status: str = OK
    detail: str = ""
    late: bool = False
    origin: str = ""
    attempt: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Intake:
    """Every student found in the inputs, once each, and how the inputs were laid out."""

    layout: str
    submissions: list[Submission]
    warnings: list[str] = field(default_factory=list)
    assignment: str | None = None  # the LMS's name for the assignment, when the download says


def read_inputs(
    paths: Sequence[Path | str],
    *,
    filename: str = "layers.py",
    layout: str | None = None,
    limits: ArchiveLimits | None = None,
) -> Intake:
    """Read every student in `paths`; `layout` forces one of LAYOUTS instead of detecting it."""
    if not paths:
        raise IntakeError("no input was given: name a .py file, a zip or a folder")
    if layout is not None and layout not in LAYOUTS:
        raise IntakeError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    files = [Path(p) for p in paths]
    input_bytes = sum(p.stat().st_size for p in files if p.is_file())
    with ExitStack() as stack:
        reader = _Reader(filename, Context.create(limits, stack, input_bytes), layout)
        intake = reader.read(files)
    if not intake.submissions:
        raise IntakeError(f"no submissions were found in {', '.join(str(p) for p in files)} "
                          f"read as layout {intake.layout!r}")
    return intake


@dataclass
class _Found:
    status: str
    source: bytes | None = None
    detail: str = ""
    origin: str = ""
    notes: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, filename: str, context: Context, layout: str | None) -> None:
        self.filename = filename
        self.context = context
        self.forced = layout
        stem = re.escape(Path(filename).stem)
        suffix = re.escape(Path(filename).suffix)
        # layers (1).py, layers-2.py, layers copy.py: what downloads and file managers make of a name
        self.variant = re.compile(rf"^{stem}[ _-]*(\(\d+\)|\d+|copy|\(copy\))?{suffix}$", re.IGNORECASE)

    def read(self, paths: list[Path]) -> Intake:
        layouts: list[str] = []
        submissions: list[Submission] = []
        warnings: list[str] = []
        assignment: str | None = None
        loose_files: list[Path] = []
        for path in paths:
            opened = self.open_path(path)
            if isinstance(opened, Path):
                loose_files.append(opened)
                layouts.append("files")
                continue
            container = opened
            if not container.items:  # a wrong folder or an empty download: no student to invent from its name
                raise IntakeError(f"{path} is empty: there is nothing to grade in it")
            warnings.extend(container.warnings)
            kind, inner = self.detect(container)
            layouts.append(kind)
            found, more_warnings, named = self.students(kind, inner, path.name if path.is_dir() else _stem(path))
            submissions.extend(found)
            warnings.extend(more_warnings)
            assignment = assignment or named
        submissions = self.read_files(loose_files) + submissions
        kinds = set(layouts)
        layout = kinds.pop() if len(kinds) == 1 else "mixed"
        if len(paths) > 1 and layout == "student":
            layout = "students"
        return Intake(layout=layout, submissions=_unique(submissions, warnings), warnings=warnings,
                      assignment=assignment)

    def open_path(self, path: Path) -> Container | Path:
        """A folder or zip as a container; a plain source file as itself."""
        if not path.exists():
            raise IntakeError(f"{path} does not exist")
        if path.is_dir():
            return folder_container(path, self.context)
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except OSError as error:
            raise IntakeError(f"{path} cannot be read: {error.strerror}") from None
        if is_zip(head):
            return open_zip_file(path, self.context)
        suffix = path.suffix.lower()
        if suffix == ".zip":
            raise ArchiveError(f"{path} is not a readable zip archive (it may be truncated or corrupt)")
        if is_unsupported_archive(path.name):
            raise IntakeError(f"{path} is not a zip archive: only zip archives can be read, so repack it as a zip")
        if suffix not in (".py", ""):
            raise IntakeError(f"{path} is neither a {Path(self.filename).suffix} file, a zip archive nor a folder")
        return path

    def read_files(self, paths: list[Path]) -> list[Submission]:
        """Loose source files: one student each, keyed by file name (or by folder, for several layers.py)."""
        stems = [p.stem for p in paths]
        submissions = []
        for path in paths:
            key = path.stem
            if stems.count(key) > 1 and path.name == self.filename and path.resolve().parent.name:
                key = path.resolve().parent.name
            try:
                size = path.stat().st_size
                if size > MAX_SOURCE_BYTES:
                    found = _Found(TOO_LARGE, detail=_too_large(path.name, size), origin=str(path))
                else:
                    found = _Found(OK, source=read_file_capped(path, MAX_SOURCE_BYTES), origin=str(path))
            except (OSError, ArchiveError) as error:
                raise IntakeError(f"{path} cannot be read: {getattr(error, 'strerror', None) or error}") from None
            submissions.append(_submission(key, found))
        return submissions

    # -- layouts ---------------------------------------------------------------------------------
    def detect(self, container: Container) -> tuple[str, Container]:
        """The layout of a folder or zip, and the container with wrapping folders peeled off."""
        inner = container
        while True:
            files, folders = inner.top_level()
            if files or len(folders) != 1:
                break
            inner = inner.under(folders.pop())
        if self.forced and self.forced != "files":
            return self.forced, (container if self.forced == "student" else inner)
        names = [f.name for f in files]
        if names and looks_like_blackboard(names):
            return "blackboard", inner
        if names and looks_like_canvas(names):
            return "canvas", inner
        if self.is_one_student(inner):
            return "student", container
        return "students", inner

    def is_one_student(self, container: Container) -> bool:
        """Whether a folder holds one student's work rather than a folder (or file) per student."""
        files, folders = container.top_level()
        target = self.filename.lower()
        if any(f.name.lower() == target for f in files) or PREFERRED_FOLDER in folders:
            return True
        units = 0
        packages = []  # top-level folders holding the file to grade (a student's package, or a student)
        for folder in folders:
            inside = [i for i in container.items if i.path.startswith(folder + "/")]
            # a folder whose layers.py is a link (never read) is still someone's: a unit, so that a
            # class of two is not taken for the one student whose file is real
            holds_target = any(i.name.lower() == target for i in inside)
            if holds_target or any(is_zip_name(i.path) and i.refused is None for i in inside):
                units += 1
            if holds_target:
                packages.append(folder)
        # A script beside a student's package (train.py, test_layers.py beside src/layers.py) imports
        # that package's layers module: it is the same student's, where a class's <student>.py is a
        # layers.py renamed. Only the head of a few files is read, and only until two students are certain.
        scripts = [f for f in files if _is_unit_file(f.path, self.filename)]
        for position, item in enumerate(scripts):
            if units >= 2:
                break
            examined = packages and position < MAX_SCRIPTS_EXAMINED
            if not (examined and self.imports_package(item, packages)):
                units += 1
        # a linked <student>.zip is someone's; a linked <student>.py too, unless it sits beside a
        # package (there it is more likely a script of that student's, as a real one would be)
        units += sum(1 for item in self.linked_students(container) if is_zip_name(item.path) or not packages)
        return units < 2

    def linked_students(self, container: Container) -> list[Item]:
        """Top-level links (never read) named as a student's file would be: <student>.py, .zip, ...;
        not one named like the file to grade (a stray layers.py at the top of a class is nobody's)."""
        return [item for item in container.items
                if item.refused is not None and "/" not in item.path and _is_unit_file(item.path, self.filename)
                and not self.variant.match(item.name)]

    def imports_package(self, item: Item, packages: list[str]) -> bool:
        """Whether a source file imports the module under grading from one of these folders, or by its
        bare name (`from src.layers import ...`, `import layers`), in its first lines."""
        if not item.path.lower().endswith(Path(self.filename).suffix.lower()):
            return False
        try:
            text = item.read(SCRIPT_HEAD_BYTES).decode("utf-8", "replace")
        except (OSError, ArchiveError):
            return False
        stem = re.escape(Path(self.filename).stem)
        where = "|".join(re.escape(p) for p in packages)
        importer = rf"^[ \t]*(from[ \t]+(({where})\.)?{stem}[ \t]+import\b|import[ \t]+(({where})\.)?{stem}\b)"
        return re.search(importer, text, re.MULTILINE) is not None

    def students(self, kind: str, container: Container, stem: str) -> tuple[list[Submission], list[str], str | None]:
        if kind == "blackboard":
            groups, warnings, assignment = read_blackboard(container.items)
            return [self.from_lms(g) for g in groups], warnings, assignment
        if kind == "canvas":
            groups, warnings = read_canvas(container.items)
            return [self.from_lms(g) for g in groups], warnings, None
        if kind == "student":
            found = self.pick_source([(i.path, i) for i in container.items], empty="the archive or folder is empty")
            return [_submission(stem, found)], [], None
        return self.per_student(container)

    def per_student(self, container: Container) -> tuple[list[Submission], list[str], str | None]:
        """A folder or zip of students: `<student>/...`, `<student>.py`, `<student>.zip`."""
        files, folders = container.top_level()
        submissions = []
        ignored = []
        for item in files:
            if _is_unit_file(item.path, self.filename):
                # <student>.py is the documented way to name a file in a class folder: no "misnamed" note
                found = self.pick_source([(item.path, item)], renamed=not is_zip_name(item.path))
                submissions.append(_submission(_stem(Path(item.path)), found))
            else:
                ignored.append(item.path)
        for folder in sorted(folders):
            inside = container.under(folder)
            found = self.pick_source([(i.path, i) for i in inside.items], empty=f"the folder {folder} is empty")
            submissions.append(_submission(folder, found))
        # a student whose <student>.py (or .zip) is a link: a row saying so, unless someone of that name
        # has one already (a link beside alice/ is no second alice)
        named = {s.key.casefold() for s in submissions}
        for item in self.linked_students(container):
            stem = _stem(Path(item.path))
            if stem.casefold() not in named:
                submissions.append(_submission(stem, self.pick_source([(item.path, item)])))
                named.add(stem.casefold())
        warnings = []
        if ignored:
            warnings.append(f"ignored {len(ignored)} file(s) that are not a student's work: {', '.join(ignored[:5])}")
        return sorted(submissions, key=lambda s: s.key), warnings, None

    def from_lms(self, group: StudentFiles) -> Submission:
        if group.files:
            found = self.pick_source(group.files)
        else:
            found = _Found(NOT_FOUND if "receipt lists" in group.empty_detail else NO_FILES, detail=group.empty_detail)
        submission = _submission(group.key, found)
        submission.name = group.name
        submission.late = group.late
        submission.attempt = group.attempt
        submission.warnings[:0] = group.notes
        return submission

    # -- finding the file to grade ---------------------------------------------------------------
    def pick_source(
        self, files: list[tuple[str, Item]], *, empty: str = "nothing was submitted", renamed: bool = False
    ) -> _Found:
        """The file to grade among one student's files, looking inside their zips when it is not outside.
        `renamed`: the file was named for the student on purpose, so another name is no news to them."""
        with self.context.scope():  # a student's nested zips are let go before the next student's
            return self._pick_source(files, empty, renamed)

    def _pick_source(self, files: list[tuple[str, Item]], empty: str, renamed: bool = False) -> _Found:
        files = [(path, item) for path, item in files if not is_junk(path)]
        if not files:
            return _Found(NO_FILES, detail=empty)
        readable = [(path, item) for path, item in files if item.refused is None]
        # entries never read (links): the student's row says so when one was all they sent, or was
        # named as the file to grade and nothing else could be graded
        refused = [item for path, item in files if item.refused is not None]
        named = [i for i in refused if i.name.lower() == self.filename.lower()] or refused
        if not readable:
            return _Found(UNREADABLE, detail=named[0].refusal)
        files = readable
        candidates, seen, problems, notes = self.candidates(files)
        if not candidates:
            candidates = [(p, i) for p, i in seen if self.variant.match(p.rpartition("/")[2])]
            if not candidates:
                sources = [(p, i) for p, i in seen if p.lower().endswith(Path(self.filename).suffix)]
                if len(sources) == 1:
                    candidates = sources
            if candidates and not renamed:
                notes.append(f"no {self.filename} was submitted; graded {candidates[0][0]} instead")
        if not candidates:
            unsupported = [p for p, _ in seen if is_unsupported_archive(p)]
            if problems:
                return _Found(UNREADABLE, detail=problems[0], notes=notes)
            if unsupported:
                detail = f"{unsupported[0]} is not a zip archive; only zip archives can be read"
                return _Found(UNREADABLE, detail=detail, notes=notes)
            if refused and named[0].name.lower() == self.filename.lower():
                return _Found(UNREADABLE, detail=named[0].refusal, notes=notes)
            return _Found(NOT_FOUND, detail=f"no {self.filename} found among: {listing([p for p, _ in seen])}",
                          notes=notes)
        ranked = sorted(candidates, key=self.rank)
        path, item = ranked[0]
        if len(ranked) > 1:
            names = [p for p, _ in ranked]
            if len(set(names)) < len(names):  # an LMS's uploads, all named alike: say them as uploaded
                names = [i.path for _, i in ranked]
            notes.append(f"found {len(ranked)} copies of {self.filename} ({listing(names)}); graded {names[0]}")
        notes.extend(f"also: {p}" for p in problems)
        if item.size > MAX_SOURCE_BYTES:
            return _Found(TOO_LARGE, detail=_too_large(path, item.size), origin=item.origin, notes=notes)
        try:
            source = item.read(MAX_SOURCE_BYTES)
        except ArchiveError as error:
            return _Found(UNREADABLE, detail=str(error), origin=item.origin, notes=notes)
        return _Found(OK, source=source, origin=item.origin, notes=notes)

    def candidates(
        self, files: list[tuple[str, Item]]
    ) -> tuple[list[tuple[str, Item]], list[tuple[str, Item]], list[str], list[str]]:
        """Files named like the target (here, else inside the zips here), every file seen, problems, notes."""
        exact = [(p, i) for p, i in files if p.rpartition("/")[2] == self.filename]
        seen = list(files)
        if exact:
            return exact, seen, [], []
        other_case = [(p, i) for p, i in files if p.rpartition("/")[2].lower() == self.filename.lower()]
        if other_case:  # graded all the same; the note, because an import of `layers` would not find it
            return other_case, seen, [], [f"{other_case[0][0]} is named {self.filename} in the assignment; graded it"]
        found: list[tuple[str, Item]] = []
        problems: list[str] = []
        notes: list[str] = []
        for path, item in files:
            if not is_zip_name(path):
                continue
            try:
                inner = item.open_archive()
            except ArchiveError as error:
                problems.append(str(error))
                continue
            notes.extend(inner.warnings)
            # a link inside is never read, but if it is the file to grade, that is the student's reason
            problems += [f"{path}:{i.path} was not read: {i.refused}" for i in inner.items
                         if i.refused is not None and i.name.lower() == self.filename.lower()]
            nested = [(f"{path}/{i.path}", i) for i in inner.items if i.refused is None]
            more, more_seen, more_problems, more_notes = self.candidates(nested)
            found += more
            seen += more_seen
            problems += more_problems
            notes += more_notes
        return found, seen, problems, notes

    def rank(self, candidate: tuple[str, Item]) -> tuple[int, int]:
        parts = candidate[0].split("/")
        preferred = len(parts) > 1 and parts[-2] == PREFERRED_FOLDER
        return (0 if preferred else 1, len(parts))


def _is_unit_file(path: str, filename: str) -> bool:
    """A file at the top of a class folder that is a student's work: a source, or an archive of one."""
    lower = path.lower()
    return lower.endswith(Path(filename).suffix.lower()) or is_zip_name(path) or is_unsupported_archive(path)


def _submission(key: str, found: _Found) -> Submission:
    return Submission(key=key, source=found.source, status=found.status, detail=found.detail,
                      origin=found.origin, warnings=list(found.notes))


def _stem(path: Path) -> str:
    """A student's key from a file or folder name: `alice.zip` and `alice.py` are both alice."""
    name = path.name
    if name.lower().endswith(".tar.gz"):
        return name[:-7] or name
    return Path(name).stem or name


def _too_large(path: str, size: int) -> str:
    return f"{path} is {size // 1024} KB, more than the {MAX_SOURCE_BYTES // 1024} KB a source may have; not graded"


def _unique(submissions: list[Submission], warnings: list[str]) -> list[Submission]:
    """One submission per key: the later attempt wins when both have one, otherwise keys get a suffix."""
    by_key: dict[str, Submission] = {}
    for submission in submissions:
        other = by_key.get(submission.key)
        if other is None:
            by_key[submission.key] = submission
        elif other.attempt and submission.attempt:
            if submission.attempt > other.attempt:
                by_key[submission.key] = submission
        else:
            n = 2
            while f"{submission.key}-{n}" in by_key:
                n += 1
            warnings.append(f"two inputs are both named {submission.key!r}; the second is {submission.key}-{n}")
            submission.key = f"{submission.key}-{n}"
            by_key[submission.key] = submission
    return list(by_key.values())
