"""The wire protocol's caps: a peer's sizes are never trusted, malformed frames are refused, and a
reader never reads past its message."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from grader.sandbox.protocol import (
    MAX_ARRAYS,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    MAX_UNTRUSTED_OPENERS,
    MessageReader,
    ProtocolError,
    arena,
    encode,
    write_message,
)
from grader.sandbox.zygote import clean_text

F_SETPIPE_SZ = 1031


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 1 << 20)  # whole test frames fit: no reader thread needed
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def frame(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + body


def read_one(pipe: tuple[int, int], data: bytes, max_array_bytes: int = 1 << 20) -> object:
    read_fd, write_fd = pipe
    os.write(write_fd, data)
    os.close(write_fd)
    return MessageReader(read_fd, max_array_bytes).read(time.monotonic() + 5)


def test_arrays_round_trip_with_shapes_and_dtypes(pipe: tuple[int, int]) -> None:
    arrays = [np.arange(6.0).reshape(2, 3), np.array(3.5), np.array([1, 2, 3]), np.zeros((0, 4)),
              np.frombuffer(b"source", dtype=np.uint8)]
    message = read_one(pipe, encode({"op": "results"}, arrays))
    assert message is not None
    assert message.header["op"] == "results"  # type: ignore[attr-defined]
    for sent, received in zip(arrays, message.arrays, strict=True):  # type: ignore[attr-defined]
        assert received.shape == sent.shape and np.array_equal(received, sent)
        assert not received.flags.writeable


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack(">I", MAX_HEADER_BYTES + 1) + b"{}", "header too large"),
        (struct.pack(">I", 4) + b"\xff\xfe{}", "not JSON"),
        (frame([1, 2, 3]), "not an object"),
        (frame({"arrays": "none"}), "not an object with an array list"),
        (frame({"arrays": [{"dtype": "O", "shape": [1]}]}), "bad array spec"),
        (frame({"arrays": [{"dtype": "f8", "shape": [-1]}]}), "bad array shape"),
        (frame({"arrays": [{"dtype": "f8", "shape": [True]}]}), "bad array shape"),
        (frame({"arrays": [{"dtype": "f8", "shape": [1.5]}]}), "bad array shape"),
        (frame({"arrays": [{"dtype": "f8", "shape": [1] * (MAX_DIMS + 1)}]}), "bad array shape"),
        (frame({"arrays": [{"dtype": "f8", "shape": [10**12, 10**12]}]}), "larger than"),
        (frame({"arrays": [{"dtype": "u1", "shape": [1]}] * (MAX_ARRAYS + 1)}), "too many arrays"),
        (frame({"arrays": [{"dtype": "f8", "shape": [4]}]}, b"\0" * 8), "truncated"),
        (struct.pack(">I", 100) + b"{", "truncated"),
        (b"\0\0", "truncated"),
        (struct.pack(">I", 200002) + b"[" * 100001 + b"]" * 100001, "not an object"),
        (struct.pack(">I", 9) + b'{"a":NaN}', "not JSON"),
    ],
)
def test_malformed_frames_are_refused(pipe: tuple[int, int], data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        read_one(pipe, data)



def test_a_forwarding_reader_keeps_the_bytes_and_specs_without_array_objects(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    arrays = [np.arange(6.0).reshape(2, 3), np.array([7.0])]
    os.write(write_fd, encode({"op": "results"}, arrays))
    message = MessageReader(read_fd, 1 << 20, split=False).read(time.monotonic() + 5)
    assert message is not None and message.arrays == [] and message.body is not None
    assert [spec["shape"] for spec in message.header["arrays"]] == [[2, 3], [1]]
    assert bytes(message.body) == b"".join(a.tobytes() for a in arrays)

def test_the_size_cap_applies_before_anything_is_allocated(pipe: tuple[int, int]) -> None:
    """A header announcing 8 GB of arrays is refused on the header alone, without reading on."""
    read_fd, write_fd = pipe
    os.write(write_fd, frame({"arrays": [{"dtype": "f8", "shape": [1 << 30]}]}))
    with pytest.raises(ProtocolError, match="larger than 1024 bytes"):
        MessageReader(read_fd, max_array_bytes=1024).read(time.monotonic() + 5)


def test_clean_end_of_stream_is_none(pipe: tuple[int, int]) -> None:
    assert read_one(pipe, b"") is None


def test_a_silent_peer_times_out(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, struct.pack(">I", 10))  # a header that never comes
    reader = MessageReader(read_fd, 1024)
    with pytest.raises(TimeoutError):
        reader.read(time.monotonic() + 0.05)
    os.write(write_fd, b'{"arrays":[]}'[:10])
    with pytest.raises(ProtocolError):  # resumes where it stopped: the 10 bytes are not JSON
        reader.read(time.monotonic() + 0.05)


def test_a_reader_never_reads_past_its_message(pipe: tuple[int, int]) -> None:
    """What follows a message stays in the pipe: it may be someone else's to read."""
    read_fd, write_fd = pipe
    write_message(write_fd, {"op": "first"}, [np.arange(3.0)])
    os.write(write_fd, b"next")
    assert MessageReader(read_fd, 1024).read(time.monotonic() + 5).header["op"] == "first"  # type: ignore[union-attr]
    assert os.read(read_fd, 10) == b"next"


def test_arena_holds_the_arrays_and_is_wiped(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    space = arena(1 << 16)
    reader = MessageReader(read_fd, 1 << 16, arena=space)
    source = np.frombuffer(b"a submission's source", dtype=np.uint8)
    write_message(write_fd, {"op": "run"}, [source])
    message = reader.read(time.monotonic() + 5)
    assert message is not None and message.arrays[0].tobytes() == source.tobytes()
    assert bytes(space[: source.size]) == source.tobytes()
    reader.wipe()
    assert bytes(space[: source.size]) == b"\0" * source.size
    write_message(write_fd, {"op": "run"}, [np.zeros(1 << 14)])
    with pytest.raises(ProtocolError, match="larger than"):
        reader.read(time.monotonic() + 5)


def test_a_message_may_carry_more_arrays_than_one_system_call_takes(pipe: tuple[int, int]) -> None:
    arrays = [np.full(2, float(i)) for i in range(2000)]
    read_fd, write_fd = pipe
    write_message(write_fd, {"op": "results"}, arrays)
    message = MessageReader(read_fd, 1 << 20).read(time.monotonic() + 5)
    assert message is not None and len(message.arrays) == 2000
    assert message.arrays[1999].tolist() == [1999.0, 1999.0]


def test_a_sandboxed_peers_deeply_nested_header_is_refused_as_not_json(pipe: tuple[int, int]) -> None:
    """orjson (the trusted peers' parser) would build this; the reader of a sandboxed peer must not."""
    read_fd, write_fd = pipe
    raw = b'{"arrays":[],"op":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    os.write(write_fd, struct.pack(">I", len(raw)) + raw)
    os.close(write_fd)
    with pytest.raises(ProtocolError, match="not JSON"):
        MessageReader(read_fd, 1 << 20, untrusted=True).read(time.monotonic() + 5)


@pytest.mark.parametrize("depth", [MAX_UNTRUSTED_OPENERS - 1, MAX_UNTRUSTED_OPENERS + 1])
def test_a_sandboxed_peers_header_reads_the_same_on_either_side_of_the_fast_parsers_bound(
    pipe: tuple[int, int], depth: int
) -> None:
    """Below the bracket count, orjson reads a sandboxed peer's header; above it, the standard
    parser does: what either returns is what the standard parser alone would."""
    read_fd, write_fd = pipe
    nested: object = "leaf \u00e9 [{"
    for _ in range(depth):
        nested = [nested]
    raw = json.dumps({"op": "results", "arrays": [], "nested": nested, "n": 2**40, "x": -0.5}).encode()
    assert raw.count(b"[") + raw.count(b"{") > depth  # the array list, the object and the leaf count too
    os.write(write_fd, struct.pack(">I", len(raw)) + raw)
    message = MessageReader(read_fd, 1 << 20, untrusted=True).read(time.monotonic() + 5)
    assert message is not None and message.header == json.loads(raw)


def test_a_sandboxed_peers_header_with_non_json_numbers_is_refused(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    raw = b'{"op": "results", "arrays": [], "x": NaN}'
    os.write(write_fd, struct.pack(">I", len(raw)) + raw)
    with pytest.raises(ProtocolError, match="not JSON"):
        MessageReader(read_fd, 1 << 20, untrusted=True).read(time.monotonic() + 5)


def test_only_strings_and_numbers_become_feedback_text() -> None:
    assert clean_text("a\x1b[31mb", 10) == "a [31mb"
    assert clean_text("a\ud800b\udfffc", 10) == "a b c"  # lone surrogates: UTF-8 cannot carry them onwards
    assert clean_text(3, 10) == "3"
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert clean_text(deep, 10) == clean_text({"a": 1}, 10) == ""
