"""Tests of suite/ (the tree mirrors the source)."""
