"""Tests of lightning_modules/ (the tree mirrors the source)."""
