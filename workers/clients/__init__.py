"""Upstream clients, one module per vendor on a shared transport (see errors.py for the error family)."""
