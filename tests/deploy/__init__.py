"""Tests of deploy/ (the tree mirrors the source)."""
