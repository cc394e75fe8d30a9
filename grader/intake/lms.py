"""What Blackboard's "Download Assignment" and Canvas's "Download Submissions" zips look like.

Both are flat: every file's name carries the student and the attempt. These readers only group a
container's files by student; choosing the file to grade is the same for every layout (`collect.py`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from grader.intake.archive import ArchiveError
from grader.intake.tree import Item, is_junk, listing

# <Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<original name>, or the attempt's `.txt`
# receipt. The prefix is greedy: assignment names may hold spaces, underscores, even "_attempt_".
BLACKBOARD_NAME = re.compile(
    r"^(?P<prefix>.+)_attempt_(?P<stamp>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})(?:(?P<receipt>\.txt)|_(?P<file>.+))$"
)
# <sortable name>[_LATE|_late]_<user id>_<file id>_<file name>
CANVAS_NAME = re.compile(r"^(?P<name>.+?)(?:_(?P<late>late|LATE))?_(?P<user>\d+)_(?P<file_id>\d+)_(?P<file>.+)$")
# Canvas renames a re-uploaded file: layers.py, layers-1.py, layers-2.py ...
CANVAS_COPY_SUFFIX = re.compile(r"^(?P<stem>.+?)-\d+(?P<ext>\.[^.]+)?$")
RECEIPT_MAX_BYTES = 256 * 1024


@dataclass
class StudentFiles:
    """One student's files in an LMS download, with what the LMS says about them."""

    key: str
    name: str | None = None
    late: bool = False
    attempt: str | None = None
    files: list[tuple[str, Item]] = field(default_factory=list)
    empty_detail: str = ""  # why there are no files, when the LMS says so
    notes: list[str] = field(default_factory=list)


@dataclass
class Receipt:
    name: str | None = None
    username: str | None = None
    assignment: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)  # (original name, stored name)


def looks_like_blackboard(names: list[str]) -> bool:
    hits = sum(1 for n in names if BLACKBOARD_NAME.match(n))
    return hits > 0 and hits * 2 >= len(names)


def looks_like_canvas(names: list[str]) -> bool:
    hits = sum(1 for n in names if CANVAS_NAME.match(n) and not BLACKBOARD_NAME.match(n))
    return hits > 0 and hits * 2 >= len(names)


_NAME_LINE = re.compile(r"^[^:\t]+:\s*(?P<name>.*?)\s*\((?P<user>[^()\s]+)\)\s*$")
_FIELD_LINE = re.compile(r"^(?P<label>[^:\t][^:]*?):\s*(?P<value>.*)$")


def parse_receipt(text: str) -> Receipt:
    """A receipt's student, assignment and file list, read by position and shape, not by English words.

    Locales change the labels ("Current Grade" / "Current Mark", other languages), never the order:
    the student is on the first line, the assignment on the second, the files are the tab-indented
    "label: value" pairs at the end, each original name followed by the name Blackboard stored it under.
    """
    receipt = Receipt()
    lines = [line.rstrip("\r") for line in text.splitlines()]
    header = [line for line in lines if line.strip() and not line[:1].isspace()]
    if header:
        match = _NAME_LINE.match(header[0].strip())
        if match:
            receipt.name = match["name"] or None
            receipt.username = match["user"]
        if len(header) > 1:
            field_match = _FIELD_LINE.match(header[1].strip())
            if field_match and field_match["value"]:
                receipt.assignment = field_match["value"].strip()
    # the files section: the indented pairs after the last "Label:" header line
    headers = [i for i, line in enumerate(lines) if line.strip().endswith(":") and not line[:1].isspace()]
    files_start = headers[-1] if headers else -1
    pending: str | None = None  # an original name waiting for its stored name
    for line in lines[files_start + 1:]:
        if not line[:1].isspace() or ":" not in line:
            continue
        value = line.strip().partition(":")[2].strip()
        stored = BLACKBOARD_NAME.match(value)
        if stored and stored["file"]:
            receipt.files.append((pending or stored["file"], value))
            pending = None
        elif value:
            pending = value
    return receipt


def _decode(data: bytes) -> str:
    """Receipts are UTF-8, but a Windows-saved one may be UTF-16 with a byte-order mark."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _stamp_text(stamp: str) -> str:
    date, time = stamp[:10], stamp[11:]
    return f"{date} {time.replace('-', ':')}"


def read_blackboard(items: list[Item]) -> tuple[list[StudentFiles], list[str], str | None]:
    """Students (latest attempt each), warnings, and the assignment name from the receipts."""
    warnings: list[str] = []
    receipts: dict[tuple[str, str], Receipt] = {}
    attempt_files: dict[tuple[str, str], list[tuple[str, Item]]] = {}
    ignored: list[str] = []
    for item in items:
        match = BLACKBOARD_NAME.match(item.name) if "/" not in item.path else None
        if not match:
            ignored.append(item.path)
            continue
        attempt = (match["prefix"], match["stamp"])
        if match["receipt"]:
            try:
                text = _decode(item.read(RECEIPT_MAX_BYTES))
            except ArchiveError as error:
                warnings.append(f"receipt {item.path} cannot be read: {error}")
                text = ""
            receipts[attempt] = parse_receipt(text)
            attempt_files.setdefault(attempt, [])
        else:
            attempt_files.setdefault(attempt, []).append((match["file"], item))
    if ignored:
        warnings.append(_ignored_warning(ignored, "named the way Blackboard names them"))

    users: dict[str, str] = {}  # prefix -> username
    assignments: Counter[str] = Counter()
    prefixes = {p for p, _ in attempt_files}
    # the assignment part every file name starts with: from any receipt, else from what all the
    # prefixes share, so that a student without a receipt is not split inside a username (mary_ann)
    shared = sorted({r.assignment for r in receipts.values() if r.assignment}, key=len, reverse=True)
    start = _shared_start(prefixes).rpartition("_")[0] if len(prefixes) > 1 else ""
    for prefix in prefixes:
        user, named = _blackboard_user(prefix, [r for (p, _), r in receipts.items() if p == prefix],
                                       [*shared, *([start] if start else [])])
        users[prefix] = user
        if named:
            assignments[named] += 1

    by_user: dict[str, dict[str, tuple[str, list[tuple[str, Item]]]]] = {}
    for (prefix, stamp), files in attempt_files.items():
        by_user.setdefault(users[prefix], {})[stamp] = (prefix, files)

    students = []
    for user, attempts in by_user.items():
        latest = max(attempts)
        prefix, files = attempts[latest]
        receipt = receipts.get((prefix, latest))
        name = next(
            (r.name for (p, s), r in sorted(receipts.items(), key=lambda kv: kv[0][1], reverse=True)
             if users[p] == user and r.name),
            None,
        )
        student = StudentFiles(key=user, name=name, attempt=_stamp_text(latest))
        originals = {stored: original for original, stored in (receipt.files if receipt else [])}
        student.files = [(originals.get(item.name, original), item) for original, item in files]
        if len(attempts) > 1:
            student.notes.append(f"graded the latest of {len(attempts)} attempts ({_stamp_text(latest)})")
        if not student.files:
            if receipt is not None and receipt.files:
                listed = ", ".join(o for o, _ in receipt.files)
                if all(is_junk(original) for original, _ in receipt.files):  # in the download, but never graded
                    student.empty_detail = f"the receipt lists only {listed}, which is not source code to grade"
                else:
                    student.empty_detail = f"the receipt lists {listed} but the download does not contain it"
            else:
                student.empty_detail = f"the latest attempt ({_stamp_text(latest)}) has no file attached"
                if any(f for s, (_, f) in attempts.items() if s != latest):
                    student.empty_detail += "; an earlier attempt had files, but the latest attempt counts"
        students.append(student)
    common = assignments.most_common(1)[0][0] if assignments else None
    return sorted(students, key=lambda s: s.key), warnings, common


def _shared_start(texts: set[str]) -> str:
    """The longest start all of `texts` share, character by character."""
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _blackboard_user(prefix: str, receipts: list[Receipt], assignments: Sequence[str] = ()) -> tuple[str, str]:
    """The username in `<Assignment>_<username>`: the receipt says where the split is when it can,
    else the assignment name the other files show."""
    for receipt in receipts:
        if receipt.username and prefix.endswith("_" + receipt.username):
            return receipt.username, prefix[: -len(receipt.username) - 1]
    for assignment in [r.assignment for r in receipts if r.assignment] + list(assignments):
        if prefix.startswith(assignment + "_") and len(prefix) > len(assignment) + 1:
            return prefix[len(assignment) + 1:], assignment
    assignment, _, user = prefix.rpartition("_")
    return (user, assignment) if user else (prefix, "")


def canvas_original_name(name: str) -> str:
    """`layers-1.py` is how Canvas names a second upload of `layers.py`."""
    match = CANVAS_COPY_SUFFIX.match(name)
    return f"{match['stem']}{match['ext'] or ''}" if match else name


def read_canvas(items: list[Item]) -> tuple[list[StudentFiles], list[str]]:
    warnings: list[str] = []
    students: dict[str, StudentFiles] = {}
    uploads: dict[str, list[tuple[int, str, Item]]] = {}
    ignored: list[str] = []
    for item in items:
        match = CANVAS_NAME.match(item.name) if "/" not in item.path else None
        if not match:
            ignored.append(item.path)
            continue
        user = match["user"]
        student = students.setdefault(user, StudentFiles(key=user, name=match["name"]))
        student.late = student.late or bool(match["late"])
        uploads.setdefault(user, []).append((int(match["file_id"]), canvas_original_name(match["file"]), item))
    if ignored:
        warnings.append(_ignored_warning(ignored, "named the way Canvas names them"))
    for user, files in uploads.items():
        # the highest file id is the latest upload: it wins a tie between two copies of one name
        students[user].files = [(name, item) for _, name, item in sorted(files, key=lambda f: -f[0])]
    return sorted(students.values(), key=lambda s: s.key), warnings


def _ignored_warning(paths: list[str], how: str) -> str:
    return f"ignored {len(paths)} file(s) not {how}: {listing(paths)}"
