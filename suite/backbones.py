"""One place where every task gets its timm backbone and its pretrained weights.

Weights come from, in order: ``weights`` (a local file, for offline clusters), or the
timm/Hugging Face hub when ``pretrained`` is true (cached after the first download).
When neither works the run stops before training with a message naming both options.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from suite.errors import UserError

# Normalisation statistics of the ImageNet-pretrained timm backbones every task uses.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_timm_model(
    name: str, pretrained: bool = False, weights: str | None = None, **kwargs: Any
) -> Any:
    """``timm.create_model`` with the suite's weights policy (see the module docstring)."""
    import timm

    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise UserError(f"model.backbone: unknown timm model '{name}' (see timm.list_models())")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"model.weights: file not found: {path}")
        try:
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except Exception as err:
            raise UserError(
                f"model.weights: cannot load '{path}' into timm model '{name}': {err}"
            ) from None
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise UserError(
            f"model.pretrained=true but the ImageNet weights of '{name}' could not be fetched "
            f"({type(err).__name__}: {str(err)[:200]}). Either run once on a machine with internet "
            "access (timm caches the weights under ~/.cache/huggingface), or download the weights "
            "file elsewhere and pass model.weights=<file>, or train from scratch with "
            "model.pretrained=false."
            + ("" if offline else " On an offline machine set HF_HUB_OFFLINE=1 so this fails at once.")
        ) from None
