"""Adapters for the ports in ``api/ports.py``: one per file, in-memory and real."""
