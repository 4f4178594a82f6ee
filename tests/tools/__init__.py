"""Tests of tools/ (the tree mirrors the source)."""
