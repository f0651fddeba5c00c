"""``POST /api/jobs``: a job definition plus its JSONL inputs, as ``multipart/form-data``.

The body has a ``definition`` part (a JSON object with the keys of a ``[[jobs]]`` table but
``input``/``inputs``) and one ``input`` file part per input, in order. The definition is
checked first, exactly as a ``[[jobs]]`` table (unknown keys, safe name, known workspace and
endpoint, metadata limits). Each input is then stored in the job's own results folder under
its sha256 (``<results>/<name>/inputs/<sha256>.jsonl``): the definition hash covers the bytes,
not the path, so sending the same job again is the same definition (a no-op), and a different
file under a taken name never overwrites the accepted job's input. The daemon then validates
and records the job as ``orchestrator submit`` does; invalid lines are a 422 naming the
uploaded file by its name and line, and nothing is kept.

The body is counted as it arrives: past :attr:`Api.max_body` bytes (or a ``Content-Length``
announcing more) the answer is a 413 naming the limit, and what was read so far is dropped
(the multipart parser keeps at most 1 MiB of a file in memory, the rest in a temporary file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import anyio
import attrs
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from orchestrator.config import Config, InputOrigin, job_from_definition
from orchestrator.errors import ConfigError
from orchestrator.model import Job, JobSpec
from orchestrator.service.commands import CommandRefused, JobCommands
from orchestrator.service.responses import ApiError

FIELD_LIMIT = 1 << 20
"""Bytes a non-file part (the definition) may have."""
MAX_INPUTS = 64
SOURCE = "POST /api/jobs"


class BodyTooLarge(Exception):
    """The request body passed the limit."""


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than the limit of {limit:,} bytes")


def _refuse(status: int, message: str, problems: tuple[str, ...] = ()) -> ApiError:
    return ApiError(status, message, problems)


def counted(request: Request, limit: int) -> Request:
    """``request`` with a body that raises :class:`BodyTooLarge` past ``limit`` bytes."""
    seen = 0
    receive = request.receive

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return Request(request.scope, limited)


async def submit(
    request: Request, config: Config, commands: JobCommands, limit: int
) -> tuple[Job, bool]:
    """Read, store and submit the job of a ``POST /api/jobs`` request.

    Raises:
        ApiError: 400, 409, 413, 415 or 422 with what is wrong.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise _refuse(
            415,
            "send multipart/form-data: a 'definition' part (JSON) and one 'input' file part "
            f"per JSONL input, got {content_type or 'no content type'!r}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    try:
        form = await counted(request, limit).form(
            max_files=MAX_INPUTS, max_fields=8, max_part_size=FIELD_LIMIT
        )
    except BodyTooLarge:
        raise _too_large(limit) from None
    except HTTPException as exc:  # the multipart parser's own refusals (malformed body)
        raise _refuse(400, f"the multipart body cannot be read: {exc.detail}") from None
    try:
        definition = await _definition(form.get("definition"))
        files = [f for f in form.getlist("input") if isinstance(f, UploadFile)]
        extra = sorted(set(form.keys()) - {"definition", "input"})
        if extra:
            raise _refuse(422, f"unknown part {extra[0]!r}: send 'definition' and 'input' parts")
        if not files:
            raise _refuse(422, "input: no 'input' file part: send each JSONL input as one")
        providers = {name: ws.provider for name, ws in config.workspaces.items()}
        budgets = {name: ws.pending_budget for name, ws in config.workspaces.items()}
        placeholders = [f"/input-{i}.jsonl" for i in range(len(files))]
        try:
            spec = job_from_definition(
                definition,
                placeholders,
                file=f"{SOURCE}: definition",
                providers=providers,
                budgets=budgets,
            )
        except ConfigError as exc:
            raise _refuse(422, str(exc)) from None
        return await _store_and_submit(spec, files, config, commands)
    finally:
        await form.close()


async def _definition(part: Any) -> dict[str, Any]:
    if part is None:
        raise _refuse(422, "definition: missing part: send the job definition as JSON")
    raw = await part.read() if isinstance(part, UploadFile) else part
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _refuse(
            400,
            f"definition: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    if not isinstance(value, dict):
        raise _refuse(422, f"definition: expected a JSON object, got {type(value).__name__}")
    return value


def _upload_name(file: UploadFile, index: int) -> str:
    """The uploaded file's own name, as errors show it (no folders, printable)."""
    name = Path((file.filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())[:200]
    return name or f"input[{index}]"


async def _store_and_submit(
    spec: JobSpec, files: list[UploadFile], config: Config, commands: JobCommands
) -> tuple[Job, bool]:
    folder = config.results.dir / spec.name / "inputs"
    stored: list[tuple[Path, bool]] = []
    names: dict[str, str] = {}
    try:
        for index, upload in enumerate(files):
            path, created = await anyio.to_thread.run_sync(_store, upload, folder)
            stored.append((path, created))
            names[str(path)] = _upload_name(upload, index)
        if len({path for path, _ in stored}) != len(stored):
            raise _refuse(422, "input: the same file is sent twice; send each input once")
        paths = tuple(str(path) for path, _ in stored)
        origins = tuple(
            InputOrigin(file=SOURCE, key=f"input[{i}] ({names[p]})") for i, p in enumerate(paths)
        )
        job, created = await commands.submit(attrs.evolve(spec, inputs=paths), origins)
    except CommandRefused as exc:
        _discard(stored, folder)
        raise _refuse(
            exc.status, _rename(exc.error, names), tuple(_rename(p, names) for p in exc.problems)
        ) from None
    except BaseException:
        _discard(stored, folder)
        raise
    if not created:  # the same definition was recorded before, with its own files
        _discard([(p, c) for p, c in stored if str(p) not in job.inputs], folder)
    return job, created


def _rename(text: str, names: dict[str, str]) -> str:
    """``text`` with each stored path replaced by the name the file was uploaded under."""
    for path, name in names.items():
        text = text.replace(path, name)
    return text


def _store(upload: UploadFile, folder: Path) -> tuple[Path, bool]:
    """Copy an upload to ``folder/<sha256>.jsonl`` (fsynced); return (path, newly created)."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".upload-{secrets.token_hex(8)}.part"
    digest = hashlib.sha256()
    source = upload.file
    source.seek(0)
    try:
        with temporary.open("wb") as target:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        final = folder / f"{digest.hexdigest()}.jsonl"
        if final.exists():
            temporary.unlink()
            return final, False
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return final, True


def _discard(stored: list[tuple[Path, bool]], folder: Path) -> None:
    """Remove the files this request created, and the folders if that left them empty."""
    for path, created in stored:
        if created:
            with contextlib.suppress(OSError):
                path.unlink()
    for empty in (folder, folder.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()
