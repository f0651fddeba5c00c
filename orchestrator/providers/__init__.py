"""Providers: everything that speaks HTTP to a Batch API. They never import the ledger.

``base.py`` is the port (:class:`~orchestrator.providers.base.Provider` and its values), one
module per dialect implements it (``mistral.py``), and ``_transport/`` holds what every dialect
shares: the client and its retries, error classification, paging, upload and verified download.
"""
