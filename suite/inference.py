"""The inference contract: what a trained task module gives ``export.py``, ``predict.py`` and the service.

A task module offers three hooks (``lightning_modules/base.py``):

- :meth:`~lightning_modules.base.SuiteModule.export_graphs`: the networks to export, each an
  :class:`ExportGraph` whose ``network`` takes *raw* input (float RGB 0-255, the layout of its
  ``example``) and returns the task's scores (probabilities, not logits), so that the preprocessing a
  deployment must repeat outside the graph is only decode -> RGB -> resize (-> frame sampling);
- :meth:`~lightning_modules.base.SuiteModule.export_inputs`: a test batch as those raw inputs, per
  graph, for the parity check of the export against PyTorch;
- :meth:`~lightning_modules.base.SuiteModule.inference_options`: the JSON-able facts a predictor needs
  beyond the data spec (threshold, TTA clips and their aggregation, event length, stride ...).

:func:`bundle_metadata` turns the three into ``preprocessing.json``, the manifest of an exported
bundle. The PyTorch path (``predict.py <run dir>``) builds the same dictionary from the checkpoint, so a
predictor sees the same metadata whichever backend runs the graphs: checkpoint and bundle give the same
answers by construction, up to the numerics the parity figures measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.contracts import DataSpec
from suite.errors import DataError

#: version of the bundle layout written in ``preprocessing.json`` (bump on incompatible change)
BUNDLE_FORMAT = 1
PREPROCESSING_JSON = "preprocessing.json"
PARITY_JSON = "parity.json"


@dataclass(frozen=True)
class ExportGraph:
    """One network a task exports: raw input in, scores out.

    ``name`` is the file stem under ``export/`` (``model`` for a task with one graph; violence has
    ``frame_encoder`` and ``sequence_model``). ``example`` is an input batch (batch >= 2) in the layout
    the graph reads; ``dynamic_axes`` are the input axes that may vary at inference (0 = batch, and for
    instance the height and width of a fully convolutional network).
    """

    name: str
    network: Any  # torch.nn.Module in eval mode
    example: Any  # torch.Tensor
    input_name: str = "input"
    output_names: tuple[str, ...] = ("scores",)
    dynamic_axes: tuple[int, ...] = (0,)
    description: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def bundle_metadata(spec: DataSpec, graphs: Sequence[ExportGraph], options: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able manifest of an exported bundle (``preprocessing.json``); the PyTorch backend builds
    the same from a checkpoint, so predictors read one format."""
    spec_dict = spec.to_dict()
    return {
        "format": BUNDLE_FORMAT,
        "task": spec.task,
        "heads": spec_dict["heads"],
        "input": spec_dict["input"],
        "extras": spec_dict["extras"],
        "value_range": [0, 255],
        "channel_order": "RGB",
        "graphs": {
            g.name: {
                "file": g.file,
                "input": g.input_name,
                "outputs": list(g.output_names),
                "input_shape": [None if axis in g.dynamic_axes else int(n) for axis, n in enumerate(g.example.shape)],
                "description": g.description,
            }
            for g in graphs
        },
        "options": dict(options),
    }


def load_trained_module(run_dir: str | Path, ckpt: str = "best",
                        overrides: Sequence[str] = ()) -> tuple[Any, Any, Path]:
    """``(module in eval mode, run config, checkpoint path)`` from a run dir, without reading any data:
    the module is configured from the data spec its checkpoint stores."""
    from suite.checkpoints import load_checkpoint
    from suite.run_dir import RunDir
    from suite.training import build_model

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    cfg = run.config(overrides, weights_from_checkpoint=True)
    ckpt_path = run.checkpoint(ckpt)
    state = load_checkpoint(ckpt_path)
    module = build_model(cfg)
    spec = type(module).spec_from_checkpoint(state)
    if spec is None:
        raise DataError(f"{ckpt_path} holds no data spec: it was not written by this suite's train.py")
    module.configure(spec)
    module.load_state_dict(state["state_dict"])
    module.eval()
    return module, cfg, ckpt_path
