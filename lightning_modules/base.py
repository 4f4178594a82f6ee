"""What every task's LightningModule shares: the contract side of a module and optimizer wiring.

A task module only computes and logs. It declares what its steps give the callbacks
(:attr:`SuiteModule.step_outputs`) and the validation metrics it logs (:meth:`logged_metrics`), and
receives the data's :class:`~suite.contracts.DataSpec` through :meth:`configure` before fitting.
Files, figures and console output belong to callbacks; a module with something to show offers
:meth:`visualize`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch

from suite.contracts import ContractError, DataSpec
from suite.inference import ExportGraph

SPEC_KEY = "data_spec"
COMPILE_PREFIX = "_orig_mod."


def compile_options(compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``model.compile`` as the keyword arguments of ``torch.compile`` (None: not compiled)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, Mapping):
        return dict(compile)
    raise ValueError(f"model.compile must be true, false or a mapping of torch.compile options "
                     f"(e.g. {{mode: max-autotune}}), got {compile!r}")


def _strip_compile_prefix(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and COMPILE_PREFIX in k]:
        state_dict[key.replace(COMPILE_PREFIX, "")] = state_dict.pop(key)


class SuiteModule(L.LightningModule):
    """Builds the optimizer and scheduler from Hydra ``_partial_`` nodes.

    ``optimizer`` is called with the trainable parameters, ``scheduler`` (optional) with the
    optimizer; ``scheduler_interval`` says whether it steps per ``epoch`` or per ``step``.
    ``pretrained``/``weights`` are the config's ``model.pretrained``/``model.weights``: the
    network receives them by interpolation; they are kept here so that every checkpoint records
    where its initial weights came from.

    ``compile`` (``model.compile``): ``true`` compiles the networks named in :attr:`compiled_networks`
    with ``torch.compile`` while fitting, a mapping passes its options (``{mode: max-autotune}``). The
    networks are compiled in place (``nn.Module.compile``), so parameter names, checkpoints and exports
    are those of the plain networks; they run uncompiled again once fitting ends (test, export).
    """

    #: attributes holding the networks ``model.compile`` compiles
    compiled_networks: ClassVar[tuple[str, ...]] = ("net",)

    #: the :class:`~suite.contracts.StepOutput` fields each stage's step fills
    step_outputs: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("loss",)}

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
    ):
        super().__init__()
        self.pretrained = pretrained
        self.weights = weights
        self.compile_options = compile_options(compile)
        # checkpoints of networks compiled by torch.compile(net) carry "_orig_mod." in their keys
        self._register_load_state_dict_pre_hook(_strip_compile_prefix)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.spec: DataSpec | None = None

    # -- contract ------------------------------------------------------------------------------
    def configure(self, spec: DataSpec) -> None:
        """Take the data's spec (class names, input) before fitting; a task that sizes its heads from
        the data builds them here. Called again with the same spec when a checkpoint is loaded."""
        self.spec = spec

    def logged_metrics(self) -> set[str]:
        """The ``val/...`` metrics this module logs every validation epoch, whatever the data
        (``selection_metric`` must be one of them, or one a callback logs)."""
        return {"val/loss"}

    def visualize(self, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        """Optional pictures of a validation batch: name -> image tensor ``[3, H, W]`` in [0, 1]."""
        return {}

    def artifacts(self, stage: str) -> dict[str, Any]:
        """Files for the run dir after ``fit`` or ``test`` (``{relative path: content}``), written by
        ``callbacks.ArtifactWriter``: a module never writes files itself."""
        return {}

    def aggregate_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Merge prediction records gathered from every rank (per-event TTA, for instance)."""
        return records

    # -- inference (suite/inference.py) --------------------------------------------------------
    def export_graphs(self) -> list[ExportGraph]:
        """The networks to export, raw input in (float RGB 0-255) and scores out; built from this
        module's current weights. A task that cannot be exported says so here."""
        raise ContractError(f"{type(self).__name__} does not export its networks (no export_graphs)")

    def export_inputs(self, batch: Any) -> dict[str, torch.Tensor]:
        """A test batch as the raw inputs of each exported graph (graph name -> tensor), for parity."""
        raise ContractError(f"{type(self).__name__} gives no parity inputs (no export_inputs)")

    def inference_options(self) -> dict[str, Any]:
        """JSON-able facts a predictor needs beyond the data spec (threshold, TTA, event length ...)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.spec is not None:
            checkpoint[SPEC_KEY] = self.spec.to_dict()

    @classmethod
    def spec_from_checkpoint(cls, checkpoint: dict[str, Any]) -> DataSpec | None:
        """The data spec a checkpoint of this module stores (None when it holds none): what
        ``predict.py`` and ``export.py`` configure the module with, without reading any data."""
        stored = checkpoint.get(SPEC_KEY)
        return DataSpec.from_dict(stored) if stored is not None else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(SPEC_KEY)
        if stored is not None and self.spec is None:
            self.configure(DataSpec.from_dict(stored))

    # -- torch.compile ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.compile_options is not None:
            for network in self._networks():
                network.compile(**self.compile_options)

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            for network in self._networks():
                # nn.Module.compile keeps the compiled call here; None restores the eager module
                network._compiled_call_impl = None

    def _networks(self) -> list[torch.nn.Module]:
        return [net for name in self.compiled_networks
                if isinstance(net := getattr(self, name, None), torch.nn.Module)]

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
