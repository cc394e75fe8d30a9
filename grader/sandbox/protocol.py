"""The wire format between trusted code and sandboxed code.

A message is a 4-byte big-endian header length, a JSON header, then the raw little-endian bytes of
the arrays the header lists. Nothing is ever unpickled: the trusted side decodes only numbers and
short strings, and every size is capped before anything is allocated. A reader never reads past the
message it is on, and can place array bytes in an arena it owns (and wipes), so that nothing a
submission sent lingers in the zygote's heap for the next submission to find.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

MAX_HEADER_BYTES = 256 * 1024
MAX_DIMS = 8
# The most elements an array's shape may describe with its zero-length axes counted as 1: numpy
# refuses to even make an empty array whose other axes multiply past its index range.
MAX_SHAPE_SPAN = 1 << 40
MAX_ARRAYS = 4096
IOV_BATCH = 512  # buffers per writev call (the kernel takes at most IOV_MAX = 1024)
# A run's results log: shared memory the run appends one frame per result to, after this count of
# frame bytes, so that what a run answered survives however it ends (a crash, a kill at a limit).
RESULTS_LOG = struct.Struct("<Q")
LOG_RESERVE = 1 << 20  # kept for error results once results with arrays have filled the rest
# A sandboxed peer's header with at most this many "[" and "{" bytes is nested at most this deep,
# within what the standard library's parser accepts (the recursion limit): orjson may read it.
MAX_UNTRUSTED_OPENERS = 900
# dtype codes allowed on the wire, and what they decode to
DTYPES: dict[str, np.dtype[Any]] = {
    "f8": np.dtype("<f8"),
    "i8": np.dtype("<i8"),
    "u1": np.dtype("u1"),
}
_F8 = DTYPES["f8"]


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed, size-capped message."""


class ArraysTooLarge(ProtocolError):
    """A message's arrays are larger than the reader allows (for a run's results: its output budget).
    `header` is the message's parsed header, so the sender's share of the excess can be told, and
    `total` the bytes its arrays announce."""

    def __init__(self, message: str, header: dict[str, Any], total: int = 0) -> None:
        super().__init__(message)
        self.header = header
        self.total = total


@dataclass
class Message:
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)
    body: memoryview | None = None  # the arrays' raw bytes, for forwarding without a copy


def _encode_arrays(arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> tuple[list[dict[str, Any]], list[bytes]]:
    specs = []
    blobs = []
    for array in arrays:
        code = _code_of(array.dtype)
        data = np.asarray(array, dtype=DTYPES[code])  # not ascontiguousarray: it turns 0-d into 1-d
        if not data.flags.c_contiguous:
            data = data.copy(order="C")
        specs.append({"dtype": code, "shape": list(data.shape)})
        blobs.append(data.tobytes())
    return specs, blobs


def _frame(header: dict[str, Any], specs: list[dict[str, Any]]) -> bytes:
    body = orjson.dumps({**header, "arrays": specs}, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(body) > MAX_HEADER_BYTES:
        raise ProtocolError("message header too large")
    return struct.pack(">I", len(body)) + body


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> bytes:
    specs, blobs = _encode_arrays(arrays)
    return _frame(header, specs) + b"".join(blobs)


def _code_of(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "f":
        return "f8"
    if dtype.kind in "iub" and dtype.itemsize > 1:
        return "i8"
    if dtype == np.dtype("u1"):
        return "u1"
    if dtype.kind == "b":
        return "i8"
    raise ProtocolError(f"dtype {dtype} cannot cross the wire")


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:IOV_BATCH])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def write_message(fd: int, header: dict[str, Any], arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> None:
    specs, blobs = _encode_arrays(arrays)
    _write_all(fd, [_frame(header, specs), *blobs])


def forward_message(fd: int, header: dict[str, Any], specs: list[dict[str, Any]], *bodies: memoryview) -> None:
    """Send a new header with array bytes already validated elsewhere, without copying them."""
    _write_all(fd, [_frame(header, specs), *bodies])


class MessageReader:
    """Reads messages from a file descriptor with a deadline, never trusting the peer's sizes.

    With an `arena` (a writable mmap), array bytes land there and the arrays returned are views
    of it, valid until the next message; the owner wipes it when it no longer needs them. A reader
    that only forwards what it reads (`split=False`) gets the validated specs and the raw body, and
    no array objects. Headers are parsed with orjson; from a sandboxed peer (`untrusted`), only
    when they cannot be nested deeper than the standard library's parser allows, which parses the
    rest and refuses nesting deeper than the recursion limit (orjson would build it for later code
    to trip over).
    """

    def __init__(
        self, fd: int, max_array_bytes: int, arena: mmap.mmap | None = None, *, split: bool = True,
        untrusted: bool = False,
    ) -> None:
        self.fd = fd
        self.max_array_bytes = max_array_bytes
        self.arena = arena
        self.split = split
        self.loads = untrusted_loads if untrusted else orjson.loads
        self.arena_used = 0  # high-water mark, for wiping
        self._head = bytearray()
        self._length: int | None = None
        self._header: dict[str, Any] | None = None
        self._body: memoryview | None = None
        self._got = 0
        self._sizes: list[tuple[np.dtype[Any], int, list[int]]] = []
        self._total = 0

    def read(self, deadline: float | None = None) -> Message | None:
        """Return the next message, or None on EOF. Raises TimeoutError past the deadline."""
        if self._length is None:
            if not self._take_head(4, deadline, eof_ok=True):
                return None
            (length,) = struct.unpack(">I", self._head[:4])
            if length > MAX_HEADER_BYTES:
                raise ProtocolError("header too large")
            self._length = length
        if self._header is None:
            self._take_head(4 + self._length, deadline, eof_ok=False)
            header = self._parse_header(bytes(self._head[4:]))
            total = self._total
            if self.arena is not None:
                if total > len(self.arena):
                    raise ArraysTooLarge(f"arrays larger than {len(self.arena)} bytes", header, total)
                self._body = memoryview(self.arena)[:total]
                self.arena_used = max(self.arena_used, total)
            else:
                self._body = memoryview(bytearray(total))
            self._header = header
            self._got = 0
        assert self._body is not None
        while self._got < len(self._body):
            self._wait(deadline)
            count = os.readv(self.fd, [self._body[self._got :]])
            if count == 0:
                raise ProtocolError("truncated message")
            self._got += count
        try:
            arrays = self._split_arrays(self._body) if self.split else []
        except ValueError as error:  # a shape numpy refuses (the peer is then replaced, not read on)
            raise ProtocolError(f"bad array shape ({error})") from None
        message = Message(self._header, arrays, self._body)
        self._head = bytearray()
        self._length = None
        self._header = None
        self._body = None
        return message

    def wipe(self) -> None:
        """Zero what the arena held (dropping the pages zeroes them), so no earlier bytes remain."""
        if self.arena is not None and self.arena_used:
            self.arena.madvise(mmap.MADV_DONTNEED, 0, _page_ceiling(self.arena_used, len(self.arena)))
            self.arena_used = 0

    def _take_head(self, size: int, deadline: float | None, *, eof_ok: bool) -> bool:
        while len(self._head) < size:
            self._wait(deadline)
            chunk = os.read(self.fd, size - len(self._head))
            if not chunk:
                if eof_ok and not self._head:
                    return False
                raise ProtocolError("truncated message")
            self._head += chunk
        return True

    def _wait(self, deadline: float | None) -> None:
        if deadline is None:
            return
        timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise TimeoutError

    def _parse_header(self, raw: bytes) -> dict[str, Any]:
        header, self._sizes, self._total = parse_header(raw, self.max_array_bytes, self.loads)
        return header

    def _split_arrays(self, body: memoryview) -> list[np.ndarray]:
        if self._sizes and all(dtype is _F8 for dtype, _, _ in self._sizes):
            return self._split_float64(body)
        arrays = []
        offset = 0
        for dtype, count, shape in self._sizes:
            if count == 0:
                array = np.zeros(shape, dtype=dtype)
            else:
                array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
            array.flags.writeable = False
            arrays.append(array)
            offset += count * dtype.itemsize
        return arrays

    def _split_float64(self, body: memoryview) -> list[np.ndarray]:
        """The same for a message of float64 arrays only (every result message): views of one array."""
        flat = np.frombuffer(body, dtype=_F8, count=self._total // 8)
        flat.flags.writeable = False
        arrays = []
        offset = 0
        for _, count, shape in self._sizes:
            arrays.append(flat[offset : offset + count].reshape(shape))
            offset += count
        return arrays


def parse_header(
    raw: bytes, max_array_bytes: int, loads: Callable[[bytes], Any] = orjson.loads
) -> tuple[dict[str, Any], list[tuple[np.dtype[Any], int, list[int]]], int]:
    """A frame's header, its arrays' (dtype, element count, shape), and their bytes in all; every
    spec is checked before a frame is refused as too large (ArraysTooLarge)."""
    try:
        header = loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # orjson's errors are ValueErrors
        raise ProtocolError("header is not JSON") from error
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise ProtocolError("header is not an object with an array list")
    specs = header["arrays"]
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError("too many arrays")
    total = 0
    sizes = []
    for spec in specs:
        code = spec.get("dtype") if type(spec) is dict else None
        dtype = DTYPES.get(code) if type(code) is str else None
        if dtype is None:
            raise ProtocolError("bad array spec")
        shape = spec.get("shape")
        if type(shape) is not list or len(shape) > MAX_DIMS:
            raise ProtocolError("bad array shape")
        count = 1
        for n in shape:
            if type(n) is not int or n < 0:  # exact type: no bools, no floats
                raise ProtocolError("bad array shape")
            count *= n
        if count == 0 and math.prod(n or 1 for n in shape) > MAX_SHAPE_SPAN:  # a non-empty one: by its size
            raise ProtocolError("bad array shape")
        total += count * dtype.itemsize
        sizes.append((dtype, count, shape))
    if total > max_array_bytes:  # after every spec is checked: the sender's share is read from them
        raise ArraysTooLarge(f"arrays larger than {max_array_bytes} bytes", header, total)
    return header, sizes, total


def untrusted_loads(raw: bytes) -> Any:
    """orjson where the text cannot be nested deeper than the standard parser allows (counting the
    brackets, inside strings too, bounds the depth); the standard parser, which refuses deep
    nesting, otherwise. orjson is the stricter of the two in every other respect."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_UNTRUSTED_OPENERS:
        return orjson.loads(raw)
    return json.loads(raw)


def expected_values(call: dict[str, Any]) -> int:
    """How many values a result of `call` carries: the stacked outputs of a perturbed call, else one
    per returned value the call sends."""
    return 1 if call.get("perturb") else len(call.get("send", []))


def _page_ceiling(size: int, limit: int) -> int:
    page = mmap.PAGESIZE
    return min(limit, (size + page - 1) // page * page)


def arena(size: int) -> mmap.mmap:
    """A private anonymous mapping: untouched pages cost nothing, and wiping it drops its pages."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
