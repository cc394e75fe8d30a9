"""One view over a folder on disk and a zip: a list of files that can be read with a cap or opened as zips.

Layout detection and the LMS readers work on this view, so a class zip, the same class unzipped into
a folder, and a student's zip inside either are handled by the same code.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from grader.intake.archive import ArchiveEntry, ArchiveError, ArchiveLimits, Budget, SafeArchive, is_zip

# Operating-system and tool droppings that are never a student's work.
JUNK_FOLDERS = frozenset({"__MACOSX", "__pycache__", ".ipynb_checkpoints", ".git", ".idea", ".vscode", ".venv"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
JUNK_SUFFIXES = (".pyc", ".pyo")
# Archives students send that only zip-reading graders cannot open: named in the status, not read.
UNSUPPORTED_ARCHIVES = (".rar", ".7z", ".tar", ".tar.gz", ".tgz", ".gz", ".bz2", ".xz")


def is_junk(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (
        any(part in JUNK_FOLDERS for part in parts[:-1])
        or name in JUNK_FILES
        or name.startswith("._")  # AppleDouble resource forks
        or name.lower().endswith(JUNK_SUFFIXES)
    )


def is_zip_name(path: str) -> bool:
    return path.lower().endswith(".zip")


def is_unsupported_archive(path: str) -> bool:
    return path.lower().endswith(UNSUPPORTED_ARCHIVES)


def listing(paths: list[str], shown: int = 5) -> str:
    """The first `shown` paths for a message, then how many more there are."""
    if not paths:
        return "nothing"
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


@dataclass
class Context:
    """What every read in one intake shares: the limits, the decompression budget, open archives."""

    limits: ArchiveLimits
    budget: Budget
    stack: ExitStack

    @classmethod
    def create(cls, limits: ArchiveLimits | None, stack: ExitStack, input_bytes: int = 0) -> Context:
        limits = limits or ArchiveLimits()
        return cls(limits=limits, budget=Budget(max(limits.max_total_bytes, 4 * input_bytes)), stack=stack)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Archives opened inside are closed, and their memory freed, when the block ends (one student)."""
        outer = self.stack
        with ExitStack() as inner:
            self.stack = inner
            try:
                yield
            finally:
                self.stack = outer

    def open_zip(self, source: Path | bytes, name: str, depth: int) -> SafeArchive:
        archive = SafeArchive(source, name=name, limits=self.limits, depth=depth, budget=self.budget)
        self.stack.callback(archive.close)
        return archive


@dataclass
class Item:
    """One file: its path inside its container, its size, and how to read it or open it as a zip."""

    path: str
    size: int
    origin: str
    reader: Callable[[int | None], bytes] = field(repr=False)
    opener: Callable[[], Container] = field(repr=False)
    refused: str | None = None  # why it is never read (a symbolic link): it still names whose it was

    @property
    def refusal(self) -> str:
        """Why a refused entry was not read, as the student's row says it."""
        return f"{self.origin} was not read: {self.refused}"

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def read(self, limit: int | None = None) -> bytes:
        return self.reader(limit)

    def open_archive(self) -> Container:
        return self.opener()


@dataclass
class Container:
    """The files of a folder or a zip, junk excluded, with the folders they sit in."""

    items: list[Item]
    directories: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    def top_level(self) -> tuple[list[Item], set[str]]:
        """Files directly at the root (never-read ones aside: a link decides no layout and makes no
        student of its own), and the names of the folders at the root."""
        files = [item for item in self.items if "/" not in item.path and item.refused is None]
        folders = {d.split("/")[0] for d in self.directories}
        folders |= {i.path.split("/")[0] for i in self.items if "/" in i.path}
        return files, {f for f in folders if f not in JUNK_FOLDERS}

    def under(self, folder: str) -> Container:
        """The part of this container inside `folder`, with paths relative to it."""
        prefix = folder + "/"
        items = [Item(i.path[len(prefix):], i.size, i.origin, i.reader, i.opener, i.refused)
                 for i in self.items if i.path.startswith(prefix)]
        directories = {d[len(prefix):] for d in self.directories if d.startswith(prefix)}
        return Container(items, directories)


def zip_container(archive: SafeArchive, context: Context) -> Container:
    items = [_zip_item(archive, entry, context) for entry in archive.entries if not is_junk(entry.path)]
    items += [refused_item(path, f"{archive.name}:{path}", why) for path, why in archive.skipped if not is_junk(path)]
    directories = {d for d in archive.directories if not is_junk(d + "/x")}
    return Container(items, directories, list(archive.warnings))


def refused_item(path: str, origin: str, why: str) -> Item:
    """An entry that is never read (a symbolic link), kept so that a student whose only file it was
    still appears, as unreadable, with the reason. It takes no part in finding the layout or the file
    to grade (`Container.top_level`, `pick_source`); reading or opening it fails with that reason."""
    def refuse(_limit: int | None = None) -> NoReturn:
        raise ArchiveError(item.refusal)

    item = Item(path, 0, origin, refuse, refuse, refused=why)
    return item


def _zip_item(archive: SafeArchive, entry: ArchiveEntry, context: Context) -> Item:
    def reader(limit: int | None) -> bytes:
        return archive.read(entry, limit=limit)

    def opener() -> Container:
        nested = archive.open_nested(entry)
        context.stack.callback(nested.close)
        return zip_container(nested, context)

    return Item(entry.path, entry.size, f"{archive.name}:{entry.path}", reader, opener)


def open_zip_file(path: Path, context: Context, name: str | None = None) -> Container:
    return zip_container(context.open_zip(path, name or path.name, depth=1), context)


def folder_container(root: Path, context: Context) -> Container:
    """A folder's regular files; symbolic links are listed as skipped, never followed."""
    items: list[Item] = []
    directories: set[str] = set()
    warnings: list[str] = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        relative = Path(folder).relative_to(root).as_posix()
        for sub in list(subfolders):
            rel = sub if relative == "." else f"{relative}/{sub}"
            if os.path.islink(os.path.join(folder, sub)):
                warnings.append(f"skipped {os.path.join(folder, sub)}: it is a symbolic link")
                subfolders.remove(sub)
            elif sub in JUNK_FOLDERS:
                subfolders.remove(sub)
            else:
                directories.add(rel)
        for name in files:
            rel = name if relative == "." else f"{relative}/{name}"
            full = Path(folder) / name
            try:
                info = full.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                warnings.append(f"skipped {full}: it is a symbolic link")
                if is_junk(rel):
                    continue
                items.append(refused_item(rel, str(full), "it is a symbolic link"))
            elif not stat.S_ISREG(info.st_mode) or is_junk(rel):
                continue
            else:
                items.append(_file_item(full, rel, info.st_size, context))
            if len(items) > context.limits.max_entries:
                raise ArchiveError(f"{root} holds more than {context.limits.max_entries} files; not read")
    return Container(items, directories, warnings)


def read_file_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing symbolic links and anything larger than `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise ArchiveError(f"{path} cannot be read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise ArchiveError(f"{path} is {size} bytes, more than the limit of {limit}; not read")
        return handle.read(limit + 1)[:limit]


def _file_item(path: Path, rel: str, size: int, context: Context) -> Item:
    def reader(limit: int | None) -> bytes:
        return read_file_capped(path, limit if limit is not None else context.limits.max_entry_bytes)

    def opener() -> Container:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if not is_zip(head):
            raise ArchiveError(f"{path} is not a zip archive")
        return open_zip_file(path, context, name=str(path))

    return Item(rel, size, str(path), reader, opener)
