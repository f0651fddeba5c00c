"""Providers: everything that speaks HTTP to a Batch API. They never import the ledger."""
