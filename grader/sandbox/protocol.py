"""The wire format between trusted code and sandboxed code.

A message is a 4-byte big-endian header length, a JSON header, then the raw little-endian bytes of
the arrays the header lists. Nothing is ever unpickled: the trusted side decodes only numbers and
short strings, and every size is capped before anything is allocated.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 256 * 1024
MAX_DIMS = 8
# dtype codes allowed on the wire, and what they decode to
DTYPES: dict[str, np.dtype[Any]] = {
    "f8": np.dtype("<f8"),
    "i8": np.dtype("<i8"),
    "u1": np.dtype("u1"),
}


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed, size-capped message."""


@dataclass
class Message:
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> bytes:
    specs = []
    blobs = []
    for array in arrays:
        code = _code_of(array.dtype)
        data = np.asarray(array, dtype=DTYPES[code])  # not ascontiguousarray: it turns 0-d into 1-d
        if not data.flags.c_contiguous:
            data = data.copy(order="C")
        specs.append({"dtype": code, "shape": list(data.shape)})
        blobs.append(data.tobytes())
    body = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    if len(body) > MAX_HEADER_BYTES:
        raise ProtocolError("message header too large")
    return struct.pack(">I", len(body)) + body + b"".join(blobs)


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


def write_message(fd: int, header: dict[str, Any], arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> None:
    data = memoryview(encode(header, arrays))
    while data:
        written = os.write(fd, data)
        data = data[written:]


class MessageReader:
    """Reads messages from a file descriptor with a deadline, never trusting the peer's sizes."""

    def __init__(self, fd: int, max_array_bytes: int) -> None:
        self.fd = fd
        self.max_array_bytes = max_array_bytes
        self.buffer = bytearray()
        self.eof = False

    def read(self, deadline: float | None = None) -> Message | None:
        """Return the next message, or None on EOF. Raises TimeoutError past the deadline."""
        header_len = None
        header: dict[str, Any] | None = None
        total = 4
        while True:
            if header_len is None and len(self.buffer) >= 4:
                (header_len,) = struct.unpack(">I", self.buffer[:4])
                if header_len > MAX_HEADER_BYTES:
                    raise ProtocolError("header too large")
                total = 4 + header_len
            if header_len is not None and header is None and len(self.buffer) >= 4 + header_len:
                header = self._parse_header(bytes(self.buffer[4 : 4 + header_len]))
                total = 4 + header_len + sum(_nbytes(spec) for spec in header["arrays"])
            if header is not None and len(self.buffer) >= total:
                arrays = self._split_arrays(header, 4 + header_len if header_len else 4)
                del self.buffer[:total]
                return Message(header, arrays)
            if self.eof:
                if self.buffer:
                    raise ProtocolError("truncated message")
                return None
            self._fill(deadline, total - len(self.buffer))

    def _fill(self, deadline: float | None, wanted: int) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        chunk = os.read(self.fd, max(wanted, 65536))
        if not chunk:
            self.eof = True
        self.buffer += chunk

    def _parse_header(self, raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as error:
            raise ProtocolError("header is not JSON") from error
        if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
            raise ProtocolError("header is not an object with an array list")
        total = 0
        for spec in header["arrays"]:
            if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
                raise ProtocolError("bad array spec")
            shape = spec.get("shape")
            if (
                not isinstance(shape, list)
                or len(shape) > MAX_DIMS
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)
            ):
                raise ProtocolError("bad array shape")
            total += _nbytes(spec)
            if total > self.max_array_bytes:
                raise ProtocolError(f"arrays larger than {self.max_array_bytes} bytes")
        return header

    def _split_arrays(self, header: dict[str, Any], offset: int) -> list[np.ndarray]:
        arrays = []
        for spec in header["arrays"]:
            size = _nbytes(spec)
            dtype = DTYPES[spec["dtype"]]
            raw = bytes(self.buffer[offset : offset + size])
            arrays.append(np.frombuffer(raw, dtype=dtype).reshape(spec["shape"]))
            offset += size
        return arrays


def _nbytes(spec: dict[str, Any]) -> int:
    count = 1
    for n in spec["shape"]:
        count *= n
    return count * DTYPES[spec["dtype"]].itemsize
