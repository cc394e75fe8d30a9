"""Uploads: a size cap enforced while the body streams in, and checks that a file is something gradable."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader.service.problems import ProblemError, answer_failure, problem_response

_CHUNK = 1 << 16


class UploadTooLarge(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail, kind="upload-too-large")


class UploadLimitMiddleware:
    """Answers 413 from Content-Length before reading anything, and counts bytes for chunked bodies.

    `small_forms` caps the body at a few bytes for addresses that take a small form and no token, so
    that nobody can make the service read and spool a large upload there (`POST /login`)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, limit_mb: float, small_forms: dict[str, int] | None = None
    ) -> None:
        self.app = app
        # (bytes, the 413's detail), for every address and for the small forms', worded once
        self.limit = (max_bytes, f"The upload is larger than the {limit_mb:g} MB limit (GRADER_MAX_UPLOAD_MB).")
        self.small_forms = {
            path: (small, f"This form is larger than the {small} bytes this address accepts.")
            for path, small in (small_forms or {}).items() if small < max_bytes
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, detail = self.small_forms.get(get_route_path(scope), self.limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._rejection(scope, detail)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise UploadTooLarge(detail)
            return message

        def too_large(error: Exception) -> Response | None:
            return self._rejection(scope, detail) if isinstance(error, UploadTooLarge) else None

        await answer_failure(self.app, scope, counted_receive, send, too_large)

    @staticmethod
    def _rejection(scope: Scope, detail: str) -> Response:
        error = UploadTooLarge(detail)
        response = problem_response(413, str(error.detail), kind=error.kind, instance=scope.get("path"))
        response.headers["Connection"] = "close"
        return response


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def check_source(content: bytes, filename: str) -> None:
    """Refuse what cannot be a Python file, with a sentence saying which problem it has."""
    if not content.strip():
        raise ProblemError(422, f"The uploaded file {filename!r} is empty.", kind="empty-upload")
    if b"\x00" in content[:8192]:
        raise ProblemError(
            415, f"The uploaded file {filename!r} is binary data, not a Python source file.", kind="binary-upload"
        )
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProblemError(
            422,
            f"The uploaded file {filename!r} is not UTF-8 text (undecodable byte at offset {error.start}).",
            kind="undecodable-upload",
        ) from error


def safe_filename(filename: str | None, default: str) -> str:
    """A name safe to use as one path component: the last part of the client's name, plain characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", name).strip(" .")
    return name[:120] or default


class StagedUpload:
    """An upload copied into a private folder, under its own file name, until it is kept or dropped."""

    def __init__(self, path: Path, digest: str, size: int, folder: Path) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self._folder = folder

    def keep(self) -> Path:
        """Move it to `folder/<sha256>/<filename>` (content-addressed; an identical upload already
        there is kept instead) and return that path."""
        final_dir = self._folder / self.digest
        final_dir.mkdir(exist_ok=True)
        final = final_dir / self.path.name
        if not final.exists():
            os.replace(self.path, final)
        return final


@contextmanager
def staged_upload(stream: IO[bytes], folder: Path, filename: str) -> Iterator[StagedUpload]:
    """The upload in `stream` copied to a private folder under `folder`, as `filename`, for reading
    before it is accepted: what is not kept (`StagedUpload.keep`) by the end of the block is removed,
    so a refused upload leaves nothing behind."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".incoming-"))
    try:
        path = staging / filename
        digest = hashlib.sha256()
        size = 0
        with path.open("wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        yield StagedUpload(path, digest.hexdigest(), size, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
