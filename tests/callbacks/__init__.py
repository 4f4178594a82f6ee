"""Tests of callbacks/ (the tree mirrors the source)."""
