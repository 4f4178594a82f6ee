"""Shared machinery of the suite: run orchestration, config checks, safe I/O."""
