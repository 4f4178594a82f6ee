"""Tests of conf/ (the tree mirrors the source)."""
