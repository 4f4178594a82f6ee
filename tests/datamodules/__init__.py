"""Tests of datamodules/ (the tree mirrors the source)."""
