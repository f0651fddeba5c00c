"""The emulated Files API: uploads, listings, deletion, content and signed URLs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

import structlog
from starlette.requests import Request

from orchestrator.clock import Clock
from orchestrator.emulator.rows import FileRow
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.store import Store
from orchestrator.emulator.upload import receive_upload
from orchestrator.emulator.validation import PURPOSES, VISIBILITIES, Checker, FilesQuery
from orchestrator.emulator.wire import ApiError, file_json

log = structlog.get_logger(__name__)


def file_not_found(file_id: str) -> ApiError:
    """The 404 for an unknown (or deleted, or another workspace's) file."""
    return ApiError(404, f"File {file_id} not found.", code="file_not_found", param="file_id")


class Files:
    """The behaviour behind the ``/v1/files`` routes and signed URLs.

    Args:
        settings: the emulator settings (the upload size limit).
        clock: the time source.
        store: the persistent state (its signing key is created on first use).
    """

    def __init__(self, settings: EmulatorSettings, clock: Clock, store: Store) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        key = store.get_meta("signing_key")
        if key is None:
            key = secrets.token_hex(32)
            store.set_meta("signing_key", key)
        self._signing_key = bytes.fromhex(key)

    async def upload(self, workspace: str, request: Request) -> dict[str, Any]:
        """``POST /v1/files``: stream the file part to disk and record it."""
        limit = self.settings.max_file_bytes
        upload = await receive_upload(request, self.store.files_dir, limit)
        check = Checker()
        if upload.tmp_path is None and not upload.too_large:
            check.fail("missing", ("body", "file"), "Field required", None)
        purpose = upload.fields.get("purpose") or "fine-tune"
        check.enum(purpose, PURPOSES, ("body", "purpose"))
        visibility = upload.fields.get("visibility") or "workspace"
        check.enum(visibility, VISIBILITIES, ("body", "visibility"))
        expiry = None
        if upload.fields.get("expiry") not in (None, "", "null"):
            expiry = check.integer(upload.fields["expiry"], ("body", "expiry"), ge=1)
        try:
            check.raise_if_any()
        except Exception:
            if upload.tmp_path is not None:
                upload.tmp_path.unlink(missing_ok=True)
            raise
        if upload.too_large:
            raise ApiError(
                400,
                f"File too large: the limit is {limit:,} bytes ({limit // (1 << 20)} MB); "
                "split the input into several files.",
                code="file_too_large",
                param="file",
            )
        assert upload.tmp_path is not None and upload.filename is not None
        file_id = str(uuid.uuid4())
        created = int(self.clock.now())
        name = upload.filename
        mimetype = "application/jsonl" if name.endswith(".jsonl") else upload.content_type
        row = FileRow(
            id=file_id,
            workspace=workspace,
            filename=name,
            purpose=purpose,
            sample_type="batch_request" if purpose == "batch" else "instruct",
            source="upload",
            bytes=upload.bytes,
            num_lines=upload.lines,
            mimetype=mimetype,
            signature=upload.sha256[:16],
            created_at=created,
            expires_at=created + expiry * 3600 if expiry is not None else None,
            visibility=visibility,
        )
        upload.tmp_path.replace(self.store.blob_path(file_id))
        self.store.insert_file(row)
        log.info("emulator.file_uploaded", file_id=file_id, bytes=row.bytes, lines=row.num_lines)
        return file_json(row)

    def live_file(self, workspace: str, file_id: str) -> FileRow:
        """A file of the workspace that is not deleted.

        Raises:
            ApiError: 404 otherwise.
        """
        row = self.store.get_file(workspace, file_id)
        if row is None or row.deleted:
            raise file_not_found(file_id)
        return row

    def retrieve_file(self, workspace: str, file_id: str) -> dict[str, Any]:
        """``GET /v1/files/{id}``: a deleted file is still described, with ``deleted: true``."""
        row = self.store.get_file(workspace, file_id)
        if row is None:
            raise file_not_found(file_id)
        return file_json(row, with_deleted=True)

    def list_files(self, workspace: str, query: FilesQuery) -> dict[str, Any]:
        """``GET /v1/files``: live files, newest first."""
        rows, total = self.store.list_files(
            workspace,
            sample_types=query.sample_types,
            sources=query.sources,
            search=query.search,
            purpose=query.purpose,
            mimetypes=query.mimetypes,
            limit=query.page_size,
            offset=query.page * query.page_size,
        )
        return {
            "data": [file_json(r) for r in rows],
            "object": "list",
            "total": total if query.include_total else None,
        }

    def delete_file(self, workspace: str, file_id: str) -> dict[str, Any]:
        """``DELETE /v1/files/{id}``: jobs already created keep their own link to the content."""
        if not self.store.delete_file(workspace, file_id):
            raise file_not_found(file_id)
        self.store.blob_path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def signed_url(self, workspace: str, file_id: str, base_url: str, hours: int) -> str:
        """``GET /v1/files/{id}/url``: a URL that serves the content without the bearer key."""
        self.live_file(workspace, file_id)
        expires = int(self.clock.now()) + hours * 3600
        signature = self._sign(file_id, expires)
        return f"{base_url.rstrip('/')}/signed/files/{file_id}?se={expires}&sig={signature}"

    def _sign(self, file_id: str, expires: int) -> str:
        message = f"{file_id}:{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def signed_file(self, file_id: str, expires: str, signature: str) -> FileRow:
        """The file a signed URL names, if its signature is good and it has not expired.

        Raises:
            ApiError: 403 for a bad or expired signature, 404 for a deleted file.
        """
        try:
            when = int(expires)
        except ValueError:
            when = -1
        if when < 0 or not hmac.compare_digest(self._sign(file_id, when), signature):
            raise ApiError(
                403,
                "The signature of this URL is not valid; ask for a new signed URL.",
                code="invalid_signature",
            )
        if when < self.clock.now():
            raise ApiError(
                403, "This signed URL has expired; ask for a new one.", code="signed_url_expired"
            )
        row = self.store.get_file_any(file_id)
        if row is None or row.deleted:
            raise file_not_found(file_id)
        return row
