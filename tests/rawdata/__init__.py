"""Tiny copies of the real datasets' raw archives, written by the tests (no network, no real data)."""
