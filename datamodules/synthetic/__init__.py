"""Generators of each task's on-disk layout: the default data when ``data.root`` is unset.

Each task module defines ``GENERATOR`` (a :class:`~datamodules.synthetic.common.SyntheticDataset`);
:func:`generator` finds it by task name without importing the other tasks.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamodules.synthetic.common import SyntheticDataset

TASKS = ("segmentation", "behavior", "violence", "relevance", "lego")


def generator(task: str) -> SyntheticDataset:
    if task not in TASKS:
        from suite.errors import ConfigError

        raise ConfigError(f"no synthetic generator for task '{task}' (tasks: {', '.join(TASKS)})")
    return import_module(f"datamodules.synthetic.{task}").GENERATOR
