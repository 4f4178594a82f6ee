"""Callbacks shared by every task."""

from callbacks.class_gap import ClassGap
from callbacks.collapse import PredictionCollapse
from callbacks.epoch_summary import EpochSummary
from callbacks.history import TrainingHistory
from callbacks.non_finite import NonFiniteLossGuard
from callbacks.onnx_export import OnnxExport
from callbacks.prediction_writer import PredictionWriter
from callbacks.rng_state import RngState
from callbacks.run_health import RunHealth

__all__ = [
    "ClassGap",
    "EpochSummary",
    "NonFiniteLossGuard",
    "OnnxExport",
    "PredictionCollapse",
    "PredictionWriter",
    "RngState",
    "RunHealth",
    "TrainingHistory",
]
