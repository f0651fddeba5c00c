"""The machinery every HTTP dialect shares: client, retries, error classification, pages, files.

::

    client.py    ApiClient (counted, logged, mapped calls; get_json / json / json_once), RetryPolicy
    errors.py    error bodies of every vendor, transient vs permanent, unknown outcomes, decode_json
    fields.py    typed reads of a JSON answer (a wrong field is a clear PermanentProviderError)
    pages.py     iterate_pages over numbered or cursor pages; has_metadata for client-side filters
    upload.py    MultipartUpload: streamed multipart/form-data bodies
    download.py  ResumableDownload: Range resume, verified length, sha256, atomic publish
    partfile.py  the .part file and its crash checkpoint
    adapter.py   HttpProvider: the base class of a dialect (auth headers, upload, download)

A dialect module (``providers/mistral.py``) imports from here only; nothing here names a vendor.
"""

from __future__ import annotations

from orchestrator.providers._transport.adapter import HttpProvider as HttpProvider
from orchestrator.providers._transport.adapter import check_api_key as check_api_key
from orchestrator.providers._transport.adapter import check_base_url as check_base_url
from orchestrator.providers._transport.client import ApiClient as ApiClient
from orchestrator.providers._transport.client import CallCounter as CallCounter
from orchestrator.providers._transport.client import RetryPolicy as RetryPolicy
from orchestrator.providers._transport.errors import ErrorBody as ErrorBody
from orchestrator.providers._transport.errors import decode_json as decode_json
from orchestrator.providers._transport.errors import malformed as malformed
from orchestrator.providers._transport.errors import map_http_error as map_http_error
from orchestrator.providers._transport.errors import map_transport_error as map_transport_error
from orchestrator.providers._transport.errors import parse_error_body as parse_error_body
from orchestrator.providers._transport.errors import with_unknown_outcome as with_unknown_outcome
from orchestrator.providers._transport.fields import expect_object as expect_object
from orchestrator.providers._transport.fields import int_field as int_field
from orchestrator.providers._transport.fields import non_negative_int as non_negative_int
from orchestrator.providers._transport.fields import optional_str as optional_str
from orchestrator.providers._transport.fields import path_id as path_id
from orchestrator.providers._transport.fields import string_map as string_map
from orchestrator.providers._transport.pages import Page as Page
from orchestrator.providers._transport.pages import has_metadata as has_metadata
from orchestrator.providers._transport.pages import iterate_pages as iterate_pages
