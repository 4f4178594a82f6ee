"""Tests of lightning_modules/nets/ (the tree mirrors the source)."""
