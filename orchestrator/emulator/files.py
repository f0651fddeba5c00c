"""The simulated file store: uploads, lookups, deletion and signed URLs (listing is a plain
store query, :meth:`~orchestrator.emulator.store.Store.list_files`).

Wire-neutral: it stores and returns :class:`~orchestrator.emulator.rows.FileRow` values and
refuses with :mod:`~orchestrator.emulator.errors` values. Which form fields an upload has, what
the file object looks like and how ids are spelled is the wire's business.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import structlog

from orchestrator.clock import Clock
from orchestrator.emulator.errors import SignatureRefused, UnknownFile
from orchestrator.emulator.rows import FileRow
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.store import Store
from orchestrator.emulator.upload import Upload

log = structlog.get_logger(__name__)


class Files:
    """The files of every workspace.

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

    def add(self, upload: Upload, row: FileRow) -> FileRow:
        """Publish a received upload under ``row`` (which the wire built) and record it."""
        assert upload.tmp_path is not None
        upload.tmp_path.replace(self.store.blob_path(row.id))
        self.store.insert_file(row)
        log.info("emulator.file_uploaded", file_id=row.id, bytes=row.bytes, lines=row.num_lines)
        return row

    def live_file(self, workspace: str, file_id: str) -> FileRow:
        """A file of the workspace that is not deleted.

        Raises:
            UnknownFile: otherwise.
        """
        row = self.store.get_file(workspace, file_id)
        if row is None or row.deleted:
            raise UnknownFile(file_id)
        return row

    def any_file(self, workspace: str, file_id: str) -> FileRow:
        """A file of the workspace, deleted or not (Mistral still describes a deleted file).

        Raises:
            UnknownFile: the workspace never had it.
        """
        row = self.store.get_file(workspace, file_id)
        if row is None:
            raise UnknownFile(file_id)
        return row

    def delete_file(self, workspace: str, file_id: str) -> None:
        """Delete a live file; jobs already created keep their own link to the content.

        Raises:
            UnknownFile: no such live file.
        """
        if not self.store.delete_file(workspace, file_id):
            raise UnknownFile(file_id)
        self.store.blob_path(file_id).unlink(missing_ok=True)

    def signed_url(self, workspace: str, file_id: str, base_url: str, hours: int) -> str:
        """A URL that serves the content without the API key, for ``hours``.

        Raises:
            UnknownFile: no such live file.
        """
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
            SignatureRefused: a bad or expired signature.
            UnknownFile: a deleted file.
        """
        try:
            when = int(expires)
        except ValueError:
            when = -1
        if when < 0 or not hmac.compare_digest(self._sign(file_id, when), signature):
            raise SignatureRefused(expired=False)
        if when < self.clock.now():
            raise SignatureRefused(expired=True)
        row = self.store.get_file_any(file_id)
        if row is None or row.deleted:
            raise UnknownFile(file_id)
        return row
