"""``<run>/export/``: the ONNX bundle of the best checkpoint, exported after the final test.

``train.py`` tests the best checkpoint after fitting; while that test runs this callback keeps up to
``parity_items`` test items as raw inputs (``module.export_inputs``), and when it ends exports the
module's graphs (the best checkpoint's weights are loaded then) with ONNX Runtime's parity on those
items (``suite.exporting.export_module``). A test that follows no fit in the same trainer (evaluate.py)
exports nothing; a finished run is exported later with ``suite.exporting.export_run``.

On by default for every preset; ``callbacks.onnx_export.enabled=false`` turns it off. A failed export
warns and leaves the run's other outputs alone (``strict=true`` makes it an error instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from suite.errors import ConfigError
from suite.exporting import DEFAULT_OPSET, DEFAULT_PARITY_ITEMS, MIN_OPSET, ParityInputs, export_module


def exports(module: Any) -> bool:
    """Whether ``module`` implements the export hooks of the inference contract: both its graphs and the
    parity inputs. (A module that overrides ``export_graphs`` only to say why it cannot be exported, such
    as the relevance encoder phase, gives no parity inputs and is not exported after its test.)"""
    from lightning_modules.base import SuiteModule

    cls = type(module)
    return (isinstance(module, SuiteModule) and cls.export_graphs is not SuiteModule.export_graphs
            and cls.export_inputs is not SuiteModule.export_inputs)


class OnnxExport(L.Callback):
    """Export the tested checkpoint's graphs to ``folder`` (default ``<run dir>/export``), rank zero only."""

    # reads the test batches through module.export_inputs, no step output
    needs: dict[str, tuple[str, ...]] = {}

    def __init__(self, enabled: bool = True, folder: str | None = None, opset: int = DEFAULT_OPSET,
                 parity_items: int = DEFAULT_PARITY_ITEMS, latency_runs: int = 10, strict: bool = False):
        # refused when the run starts, not after its training
        if opset < MIN_OPSET:
            raise ConfigError(f"callbacks.onnx_export.opset={opset}: the networks keep PyTorch's numerics from "
                              f"opset {MIN_OPSET} on; give {MIN_OPSET} or more")
        if parity_items < 1 or latency_runs < 0:
            raise ConfigError("callbacks.onnx_export: parity_items must be at least 1 and latency_runs at least 0, "
                              f"got {parity_items} and {latency_runs}")
        self.enabled = enabled
        self.folder = folder
        self.opset = opset
        self.parity_items = parity_items
        self.latency_runs = latency_runs
        self.strict = strict
        self.parity: dict[str, Any] | None = None
        self._fitted = False
        self._inputs: ParityInputs | None = None

    def _active(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        return self.enabled and self._fitted and trainer.is_global_zero and exports(pl_module)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.enabled and stage == "fit" and not exports(pl_module):
            rank_zero_warn(f"callbacks.onnx_export: {type(pl_module).__name__} has no export graphs; "
                           "the run will have no export/ bundle")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fitted = True

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._inputs = ParityInputs(self.parity_items) if self._active(trainer, pl_module) else None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._inputs is not None and not self._inputs.full:
            self._inputs.add(pl_module, batch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._inputs is None:
            return
        inputs, self._inputs = self._inputs.inputs, None
        folder = Path(self.folder) if self.folder else Path(trainer.default_root_dir) / "export"
        try:
            self.parity = export_module(pl_module, folder, inputs or None, self.opset,
                                        checkpoint=trainer.ckpt_path, latency_runs=self.latency_runs,
                                        strict=self.strict)
        except Exception as err:  # the run's checkpoints and metrics matter more than its bundle
            if self.strict:
                raise
            rank_zero_warn(f"callbacks.onnx_export: the ONNX export failed ({type(err).__name__}: {err}); "
                           f"export the run later with suite.exporting.export_run")
            return
        if not self.parity["passed"]:
            rank_zero_warn(f"callbacks.onnx_export: ONNX Runtime disagrees with PyTorch beyond the tolerance; "
                           f"see {folder / 'parity.json'}")
