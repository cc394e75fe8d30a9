"""Reading zip archives nobody vouches for: entries are read into memory under named limits.

Nothing is ever extracted to disk, so there is no scratch folder an entry could escape from or that
could be left behind: an entry named `../../x` or `/etc/x` is only a name here. Every limit that
stops a zip bomb is a field of `ArchiveLimits`, checked before a byte is decompressed.
"""

from __future__ import annotations

import io
import re
import stat
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from grader.intake.errors import IntakeError

MiB = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """What one intake may cost; every number a hostile archive could push is bounded here."""

    # Entries listed in one archive (a class of 300 with starter files and junk stays far below).
    max_entries: int = 10_000
    # Declared uncompressed size of one archive, and bytes actually decompressed over a whole intake
    # (for an input larger than a quarter of this, four times the input's size: a big honest class
    # download is never cut short, a small bomb is).
    max_total_bytes: int = 2048 * MiB
    # One entry read into memory: a student's nested zip (a .py source has its own, smaller cap).
    max_entry_bytes: int = 256 * MiB
    # Uncompressed / compressed size, for an archive as a whole and for each entry read; source
    # code compresses 3-10x, a bomb 1000x.
    max_ratio: float = 200.0
    # Below this many uncompressed bytes a high ratio is harmless (a file of blank lines).
    ratio_floor: int = 4 * MiB
    # Archives inside archives: a class zip (1) holding a student's zip (2) holding one more (3).
    max_depth: int = 3


class ArchiveError(IntakeError):
    """An archive, or an entry of it, cannot be read safely; the message says why in one sentence."""


def _size(n: int) -> str:
    if n >= 1024 * MiB:
        return f"{n / (1024 * MiB):.1f} GB"
    if n >= MiB:
        return f"{n / MiB:.1f} MB"
    return f"{n} bytes"


class Budget:
    """Bytes decompressed so far over a whole intake, shared by an archive and everything nested in it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int, what: str) -> None:
        with self._lock:
            if self.used + n > self.limit:
                raise ArchiveError(
                    f"{what} would take the archive past {_size(self.limit)} uncompressed (a zip bomb?); not read"
                )
            self.used += n


_DRIVE = re.compile(r"^[A-Za-z]:$")


def clean_member_name(name: str) -> tuple[str, str | None]:
    """An entry's name as a relative POSIX path, and why it was refused (None when it is safe)."""
    raw = name.replace("\\", "/")  # zips made on Windows use backslashes
    if "\x00" in raw:
        return "", "its name contains a NUL byte"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or (parts and _DRIVE.match(parts[0])):
        return "", "it has an absolute path"
    if ".." in parts:
        return "", "its path climbs out of the archive (..)"
    return "/".join(parts), None


@dataclass(frozen=True)
class ArchiveEntry:
    """One regular file in an archive, by its cleaned path."""

    path: str
    size: int
    compressed: int
    info: zipfile.ZipInfo = field(repr=False, compare=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.info.flag_bits & 0x1)


def is_zip(head: bytes) -> bool:
    """Whether bytes start like a zip (a local file header, or the end record of an empty zip)."""
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


class SafeArchive:
    """A zip opened for reading with every limit checked; entries come out as bytes, never as files."""

    def __init__(
        self,
        source: Path | bytes,
        *,
        name: str,
        limits: ArchiveLimits | None = None,
        depth: int = 1,
        budget: Budget | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or ArchiveLimits()
        self.depth = depth
        self.budget = budget or Budget(self.limits.max_total_bytes)
        self.warnings: list[str] = []
        self.directories: set[str] = set()
        # (path, why) of entries never read but named safely: they still say whose they were
        self.skipped: list[tuple[str, str]] = []
        if depth > self.limits.max_depth:
            raise ArchiveError(f"{name} is nested more than {self.limits.max_depth} archives deep; not read")
        archive_size = len(source) if isinstance(source, bytes) else _file_size(source)
        try:
            self._handle: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        except OSError as error:
            raise ArchiveError(f"{name} cannot be read: {error.strerror}") from None
        try:
            # zipfile parses the whole central directory up front: refuse a huge one before it does
            declared = declared_entry_count(self._handle)
            if declared is not None and declared > self.limits.max_entries:
                raise ArchiveError(
                    f"{name} has {declared} entries, more than the limit of {self.limits.max_entries}; not read"
                )
            self._handle.seek(0)
            try:
                self._zip = zipfile.ZipFile(self._handle)
                infos = self._zip.infolist()
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, OverflowError) as error:
                raise ArchiveError(
                    f"{name} is not a readable zip archive (it may be truncated or corrupt): {error}"
                ) from None
            self.entries = self._check(infos, archive_size)
        except ArchiveError:
            self.close()
            raise

    def _check(self, infos: list[zipfile.ZipInfo], archive_size: int) -> list[ArchiveEntry]:
        limits = self.limits
        if len(infos) > limits.max_entries:
            raise ArchiveError(
                f"{self.name} has {len(infos)} entries, more than the limit of {limits.max_entries}; not read"
            )
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_total_bytes:
            raise ArchiveError(
                f"{self.name} would expand to {_size(declared)}, more than the limit of "
                f"{_size(limits.max_total_bytes)} (a zip bomb?); not read"
            )
        if declared > limits.ratio_floor and declared / max(archive_size, 1) > limits.max_ratio:
            raise ArchiveError(
                f"{self.name} would expand {declared / max(archive_size, 1):.0f} times its size "
                f"(limit {limits.max_ratio:g}; a zip bomb?); not read"
            )
        entries: dict[str, ArchiveEntry] = {}
        for info in infos:
            path, refused = clean_member_name(_member_name(info))
            if refused:
                self.warnings.append(f"{self.name}: skipped entry {info.filename!r}: {refused}")
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                # never followed and never created: a link's target is just bytes we do not look at
                self.warnings.append(f"{self.name}: skipped entry {path!r}: it is a symbolic link")
                if path:
                    self.skipped.append((path, "it is a symbolic link"))
                    self._add_parents(path)
                continue
            if info.is_dir():
                if path:
                    self.directories.add(path)
                continue
            if not path:
                continue
            if path in entries:
                self.warnings.append(f"{self.name}: {path!r} appears twice; the later entry is used")
            entries[path] = ArchiveEntry(path=path, size=info.file_size, compressed=info.compress_size, info=info)
            self._add_parents(path)
        return list(entries.values())

    def _add_parents(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        while parent:
            self.directories.add(parent)
            parent = parent.rpartition("/")[0]

    def read(self, entry: ArchiveEntry, *, limit: int | None = None) -> bytes:
        """The entry's bytes, after its declared size and ratio pass the limits and the budget allows them."""
        limits = self.limits
        cap = min(limit, limits.max_entry_bytes) if limit is not None else limits.max_entry_bytes
        what = f"{self.name}:{entry.path}"
        if entry.size > cap:
            raise ArchiveError(
                f"{what} would expand to {_size(entry.size)}, more than the limit of {_size(cap)}; not read"
            )
        if entry.size > limits.ratio_floor and entry.size / max(entry.compressed, 1) > limits.max_ratio:
            raise ArchiveError(
                f"{what} would expand {entry.size / max(entry.compressed, 1):.0f} times its compressed size "
                f"(limit {limits.max_ratio:g}; a zip bomb?); not read"
            )
        if entry.encrypted:
            raise ArchiveError(f"{what} is encrypted with a password; not read")
        self.budget.take(entry.size, what)
        try:
            # zipfile stops at the declared size and checks the CRC, so a lying header cannot
            # make this read more than `entry.size` bytes.
            with self._zip.open(entry.info) as stream:
                data = stream.read(entry.size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, OverflowError) as error:
            raise ArchiveError(f"{what} is corrupt and cannot be read: {error}") from None
        except (NotImplementedError, RuntimeError) as error:
            raise ArchiveError(f"{what} cannot be read: {error}") from None
        if len(data) > entry.size:
            raise ArchiveError(f"{what} holds more data than its header declares; not read")
        return data

    def open_nested(self, entry: ArchiveEntry) -> SafeArchive:
        """A zip inside this one, opened under the same limits and budget, one level deeper."""
        name = f"{self.name}:{entry.path}"
        if self.depth + 1 > self.limits.max_depth:
            raise ArchiveError(f"{name} is nested more than {self.limits.max_depth} archives deep; not read")
        data = self.read(entry)
        return SafeArchive(data, name=name, limits=self.limits, depth=self.depth + 1, budget=self.budget)

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        self._handle.close()

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def declared_entry_count(handle: IO[bytes]) -> int | None:
    """The entry count in a zip's end-of-central-directory record (zip64 too), or None if there is none."""
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    tail_length = min(size, 22 + 65535)  # the record, then a comment of at most 64 KB
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    if count == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        handle.seek(int.from_bytes(tail[at - 12:at - 4], "little"))
        record = handle.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            count = int.from_bytes(record[32:40], "little")
    return count


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise ArchiveError(f"{path} cannot be read: {error.strerror}") from None


def _member_name(info: zipfile.ZipInfo) -> str:
    """An entry's name as its maker meant it. Without the UTF-8 flag, zipfile reads the name as
    cp437; tools that write UTF-8 names without the flag (older Canvas downloads, some re-zippers)
    then show `m├╝ller` for `müller`. A name whose cp437 bytes are valid UTF-8 is read as UTF-8,
    as Canvas itself does; a real cp437 name practically never is."""
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name
