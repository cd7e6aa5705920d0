"""Coordination adapters (etcd for production, local for the embedded default)."""
