"""One predictor per task, all on the same base (``deploy.predictors.base.Predictor``).

``predictor_for(backend)`` picks the class from the bundle manifest's ``task``; the classes are
imported lazily so that a Raspberry Pi serving one task never imports another task's readers.
"""

from __future__ import annotations

import importlib
from typing import Any

from suite.errors import DataError

#: task -> "module:Class"
PREDICTORS: dict[str, str] = {
    "segmentation": "deploy.predictors.segmentation:SegmentationPredictor",
    "behavior": "deploy.predictors.behavior:BehaviorPredictor",
    "violence": "deploy.predictors.violence:ViolencePredictor",
    "relevance": "deploy.predictors.relevance:RelevancePredictor",
    "lego": "deploy.predictors.lego:LegoPredictor",
}


def predictor_for(backend: Any, options: dict[str, Any] | None = None) -> Any:
    """The task's predictor over ``backend``; ``options`` are the user's ``key=value`` settings."""
    task = backend.meta.get("task")
    target = PREDICTORS.get(task)
    if target is None:
        raise DataError(f"no predictor for task '{task}' (tasks with one: {', '.join(sorted(PREDICTORS))})")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(backend, options or {})
