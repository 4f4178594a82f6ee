"""Validate a composed config before anything is built.

Every node with a ``_target_`` is checked against the signature of the class or function it
names: an unknown key (a typo) or a value of the wrong type fails here, naming the full key,
instead of deep inside training. Hydra already refuses unknown keys in command-line overrides;
this also covers keys added by experiment presets or with ``+key=value``.

Values out of range (``data.batch_size=0``, ``trainer.max_epochs=-1``...) are refused by the
declarative rules of ``RANGE_RULES``, and config group choices on the command line
(``experiment=<name>``) by ``check_group_overrides`` before Hydra composes anything.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from suite.errors import ConfigError
from suite.precision import precision_errors

# Top-level scalar keys of conf/train.yaml and their types.
TOP_LEVEL_TYPES: dict[str, Any] = {
    "task_name": str,
    "seed": int,
    "ckpt_path": str | None,
    "selection_metric": str,
    "selection_mode": str,
    "test_after_fit": bool,
    "overwrite": bool,
    "on_data_change": str,
    "deterministic": bool,
}
TOP_LEVEL_GROUPS = {"data", "model", "trainer", "callbacks", "logger", "paths", "extras", "hydra", "verdict",
                    "health"}
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _import_target(path: str, key: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception as err:  # ImportError, AttributeError, ...
        raise ConfigError(f"{key}._target_: cannot import '{path}' ({err})") from None


def _signature(target: Any) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, True, {}
    params = {n: p for n, p in sig.parameters.items() if n not in ("self", "cls")}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: skip type checks
        hints = {}
    return params, accepts_any, hints


def _matches(value: Any, annotation: Any) -> bool:
    """True when ``value`` fits ``annotation``; unknown annotations are accepted."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if isinstance(value, str) and value.startswith("${"):
        return True  # unresolved interpolation, checked after resolution
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    base = origin or annotation
    if base in (list, tuple, Sequence, typing.Sequence):
        return isinstance(value, ListConfig | list | tuple)
    if base in (dict, Mapping, typing.Mapping):
        return isinstance(value, DictConfig | dict)
    return True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _raw(value_node: Any) -> Any:
    """The value as written, without resolving interpolations (they may need Hydra's runtime)."""
    if isinstance(value_node, DictConfig | ListConfig):
        return OmegaConf.to_container(value_node, resolve=False)
    return value_node._value()


def _check_node(node: DictConfig, key: str, errors: list[str]) -> None:
    target_path = node.get("_target_")
    if target_path is None:
        for child_key in node.keys():
            child = node._get_node(child_key)
            if isinstance(child, DictConfig):
                _check_node(child, f"{key}.{child_key}" if key else str(child_key), errors)
        return
    target = _import_target(str(target_path), key)
    params, accepts_any, hints = _signature(target)
    for child_key in node.keys():
        child_key = str(child_key)
        if child_key in HYDRA_KEYS:
            continue
        full = f"{key}.{child_key}"
        if child_key not in params and not accepts_any:
            close = difflib.get_close_matches(child_key, params.keys(), n=1)
            hint = f" (did you mean '{key}.{close[0]}'?)" if close else ""
            errors.append(f"unknown key '{full}' for {target_path}{hint}")
            continue
        value_node = node._get_node(child_key)
        if isinstance(value_node, DictConfig) and "_target_" in value_node:
            _check_node(value_node, full, errors)
            continue
        value = _raw(value_node)
        annotation = hints.get(child_key, inspect.Parameter.empty)
        if not _matches(value, annotation):
            errors.append(
                f"'{full}' expects {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
            )


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every unknown key, wrongly typed or out-of-range value."""
    errors: list[str] = []
    for key in cfg.keys():
        key = str(key)
        if key in TOP_LEVEL_TYPES:
            value = _raw(cfg._get_node(key))
            if not _matches(value, TOP_LEVEL_TYPES[key]):
                errors.append(
                    f"'{key}' expects {_type_name(TOP_LEVEL_TYPES[key])}, got {value!r} ({type(value).__name__})"
                )
        elif key not in TOP_LEVEL_GROUPS:
            close = difflib.get_close_matches(key, list(TOP_LEVEL_TYPES) + list(TOP_LEVEL_GROUPS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(f"unknown top-level key '{key}'{hint}")
    for group in ("data", "model", "trainer", "callbacks", "logger"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            _check_node(node, group, errors)
    errors += range_errors(cfg)
    errors += precision_errors(cfg)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))


# ---------------------------------------------------------------------------------------------
# Value ranges
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RangeRule:
    """The values of the keys that match ``pattern`` must pass ``ok``.

    ``pattern`` is an fnmatch pattern over the dotted key, where ``*`` also spans dots
    (``*.lr`` matches ``model.optimizer.lr``). ``expects`` and ``why`` make the message.
    """

    pattern: str
    ok: Callable[[Any], bool]
    expects: str
    why: str = ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    # A value that is not a number is the type check's to report, with the expected type; nan and inf
    # (YAML's .nan, .inf) are out of every range.
    return lambda value: not _is_number(value) or (math.isfinite(value) and test(value))


POSITIVE = _numeric(lambda v: v > 0)
NON_NEGATIVE = _numeric(lambda v: v >= 0)
AT_LEAST_ONE = _numeric(lambda v: v >= 1)
OPEN_UNIT = _numeric(lambda v: 0 < v < 1)
UNIT = _numeric(lambda v: 0 <= v <= 1)

# The first rule whose pattern matches a key decides for it: specific patterns come before general ones.
RANGE_RULES: tuple[RangeRule, ...] = (
    RangeRule("selection_mode", lambda v: v in ("min", "max"), "min or max",
              "whether a lower or a higher selection_metric is better"),
    RangeRule("on_data_change", lambda v: v in ("warn", "error"), "warn or error",
              "what a resume does when the data differs from what the run first read"),
    RangeRule("seed", _numeric(lambda v: 0 <= v < 2**32), "in [0, 2**32 - 1]",
              "Lightning would replace a seed outside it by 0, and two runs would share a seed without a word"),
    RangeRule("trainer.max_epochs", AT_LEAST_ONE, ">= 1",
              "-1 would train forever and 0 would record an untrained model as a finished run; "
              "to train by steps, set trainer.max_steps and trainer.max_epochs=null"),
    RangeRule("trainer.max_steps", _numeric(lambda v: v == -1 or v >= 1), "-1 (no limit) or >= 1",
              "0 would record an untrained model as a finished run"),
    RangeRule("trainer.limit_train_batches", POSITIVE, "> 0 (a share of the batches up to 1.0, or a count)",
              "0 would record an untrained model as a finished run"),
    RangeRule("trainer.limit_*_batches", NON_NEGATIVE, ">= 0 (a share of the batches up to 1.0, or a count)"),
    RangeRule("trainer.num_sanity_val_steps", _numeric(lambda v: v >= -1), ">= -1"),
    RangeRule("*.save_top_k", _numeric(lambda v: v >= -1), ">= -1", "-1 keeps every checkpoint, 0 none"),
    RangeRule("trainer.min_epochs", NON_NEGATIVE, ">= 0"),
    RangeRule("trainer.num_nodes", AT_LEAST_ONE, ">= 1"),
    RangeRule("trainer.check_val_every_n_epoch", AT_LEAST_ONE, ">= 1"),
    RangeRule("trainer.log_every_n_steps", AT_LEAST_ONE, ">= 1"),
    RangeRule("trainer.accumulate_grad_batches", AT_LEAST_ONE, ">= 1"),
    RangeRule("trainer.gradient_clip_val", NON_NEGATIVE, ">= 0"),
    RangeRule("*batch_size", POSITIVE, "> 0"),
    RangeRule("*num_workers", NON_NEGATIVE, ">= 0", "0 loads the batches in the main process"),
    RangeRule("*.lr", POSITIVE, "> 0"),
    RangeRule("*.temperature", POSITIVE, "> 0"),
    RangeRule("*.label_smoothing", _numeric(lambda v: 0 <= v < 1), "in [0, 1)"),
    RangeRule("model.loss.*_weight", NON_NEGATIVE, ">= 0"),
    RangeRule("*dev_samples", AT_LEAST_ONE, ">= 1"),
    RangeRule("*num_frames", AT_LEAST_ONE, ">= 1"),
    RangeRule("*clip_len", AT_LEAST_ONE, ">= 1"),
    RangeRule("*clips_per_event", AT_LEAST_ONE, ">= 1"),
    RangeRule("*tta_crops", AT_LEAST_ONE, ">= 1"),
    RangeRule("*.weight_decay", NON_NEGATIVE, ">= 0"),
    RangeRule("*dropout", _numeric(lambda v: 0 <= v < 1), "in [0, 1)"),
    RangeRule("*patience", NON_NEGATIVE, ">= 0"),
    RangeRule("*.val_fraction", OPEN_UNIT, "in (0, 1)", "the split needs samples and must leave some for training"),
    RangeRule("*.test_fraction", OPEN_UNIT, "in (0, 1)", "the split needs samples and must leave some for training"),
    RangeRule("*.boost_share", OPEN_UNIT, "in (0, 1)", "the tail's share of the rows after oversampling"),
    RangeRule("*.background_fraction", _numeric(lambda v: 0 < v <= 1), "in (0, 1]"),
    RangeRule("*_fraction", UNIT, "in [0, 1]"),
    RangeRule("*image_size", POSITIVE, "> 0"),
    RangeRule("*crop_size", POSITIVE, "> 0"),
    RangeRule("*frame_size", POSITIVE, "> 0"),
    RangeRule("*synthetic_size", POSITIVE, "> 0"),
    RangeRule("*synthetic_images", POSITIVE, "> 0"),
)


def rule_for(key: str, rules: Sequence[RangeRule] = RANGE_RULES) -> RangeRule | None:
    """The rule that decides for ``key`` (the first that matches), or None."""
    return next((rule for rule in rules if fnmatch.fnmatchcase(key, rule.pattern)), None)


def _range_message(key: str, value: Any, rule: RangeRule) -> str:
    why = f" ({rule.why})" if rule.why else ""
    return f"'{key}' must be {rule.expects}, got {value!r}{why}"


def value_error(key: str, value: Any, rules: Sequence[RangeRule] = RANGE_RULES) -> str | None:
    """The message for ``key=value`` when a rule refuses it, else None (also for keys no rule covers)."""
    rule = rule_for(key, rules)
    if rule is None or value is None:  # null means "not set" for every ranged key of the suite
        return None
    try:
        ok = rule.ok(value)
    except TypeError:  # e.g. a list where a number belongs: the type check reports it
        return None
    return None if ok else _range_message(key, value, rule)


def _leaves(node: DictConfig, prefix: str) -> typing.Iterator[tuple[str, Any]]:
    """Dotted keys and values as written. Interpolations are skipped: the key they point to is
    checked where it is set, so the message names the key to change."""
    for child_key in node.keys():
        key = f"{prefix}.{child_key}" if prefix else str(child_key)
        child = node._get_node(child_key)
        if isinstance(child, DictConfig):
            yield from _leaves(child, key)
        elif not isinstance(child, ListConfig) and not OmegaConf.is_interpolation(node, str(child_key)):
            yield key, child._value()


def range_errors(cfg: DictConfig, rules: Sequence[RangeRule] = RANGE_RULES) -> list[str]:
    """Every value of ``cfg`` (Hydra's own node aside) that a rule refuses, as messages naming the key."""
    errors = []
    for key, value in _leaves(cfg, ""):
        if key.split(".")[0] == "hydra":
            continue
        message = value_error(key, value, rules)
        if message:
            errors.append(message)
    return errors


def _parse_overrides(overrides: Sequence[str]) -> list[Any] | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # a malformed override: Hydra reports it with its own message
        return None


def _discrete_values(override: Any) -> list[Any] | None:
    """The values a sweep override takes (``a,b``, ``range(1,4)``); None for intervals and globs."""
    from hydra.core.override_parser.types import ValueType

    if not override.is_discrete_sweep() or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return None
    return list(override.sweep_iterator())


def sweep_errors(overrides: Sequence[str], rules: Sequence[RangeRule] = RANGE_RULES) -> list[str]:
    """Range errors of the values a multirun sweeps over (``data.batch_size=0,8``), so that a bad
    value is refused before the first job starts instead of failing its own job."""
    errors = []
    for override in _parse_overrides(overrides) or []:
        if not override.is_sweep_override():
            continue
        for value in _discrete_values(override) or []:
            message = value_error(override.key_or_group, value, rules)
            if message:
                errors.append(message)
    return errors


# ---------------------------------------------------------------------------------------------
# Config group choices on the command line
# ---------------------------------------------------------------------------------------------
# Groups that pick one whole part of a run. A list (experiment=[a,b]) would merge the options key by
# key, the last one winning where they overlap, and run a hybrid nobody asked for. logger and
# debug are left out: two loggers, or two debug patches, compose.
SINGLE_CHOICE_GROUPS = frozenset({"experiment", "data", "model", "trainer", "callbacks", "paths", "hparams_search",
                                  "verdict"})

# Flags after which nothing is trained, and the command line needs no check.
_NO_RUN_FLAGS = ("help", "hydra_help", "shell_completion", "info")


def _group_option_errors(group: str, value: Any, conf_dir: Path, multirun: bool) -> list[str]:
    if isinstance(value, list):
        if group in SINGLE_CHOICE_GROUPS:
            runs = ",".join(str(v) for v in value)
            hint = "" if multirun else f" (python train.py -m {group}={runs})"
            return [f"{group}=[{runs}]: pick one {group}; a list would merge them into one run. "
                    f"To run each of them, sweep over them with -m{hint}"]
        return [e for v in value for e in _group_option_errors(group, v, conf_dir, multirun)]
    if value is None or (conf_dir / group / f"{value}.yaml").is_file():
        return []
    names = sorted(str(p.relative_to(conf_dir / group).with_suffix("")) for p in (conf_dir / group).rglob("*.yaml"))
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return [f"{group}={value}: there is no {group} '{value}'{hint}; the {group} options are: {', '.join(names)}"]


def _command_line(argv: Sequence[str]) -> Any | None:
    """Hydra's reading of ``argv``; None when nothing will be composed and run (``--help``...) or the
    command line is malformed (Hydra says what is wrong with it)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None
    return None if any(getattr(args, flag, None) for flag in _NO_RUN_FLAGS) else args


def check_group_overrides(argv: Sequence[str], conf_dir: str | Path) -> None:
    """Refuse a command line that picks a config group option that does not exist, or several options
    of a single-choice group, before Hydra composes anything. Groups of Hydra and its plugins
    (``hydra/...``) are left to Hydra.
    """
    conf_dir = Path(conf_dir)
    args = _command_line(argv)
    if args is None or args.config_path or args.config_dir:  # other config folders may hold other options
        return
    overrides = _parse_overrides(args.overrides) or []
    if any(o.key_or_group.startswith("hydra.searchpath") for o in overrides):
        return
    errors: list[str] = []
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or group.split("/")[0] == "hydra" or not (conf_dir / group).is_dir():
            continue
        if override.is_sweep_override():
            values = _discrete_values(override) or []
        else:
            values = [override.value()]
        for value in values:
            errors += _group_option_errors(group, value, conf_dir, args.multirun)
    if errors:
        raise ConfigError("invalid command line:\n  - " + "\n  - ".join(errors))


def check_command_line(argv: Sequence[str], conf_dir: str | Path, config_name: str = "train") -> None:
    """Refuse, as a ConfigError, a command line whose config cannot be composed: a group option that does
    not exist, a list for a single-choice group, an override of a key that does not exist
    (``data.batch_sise=4``), a malformed value. Hydra reports these with exit code 1, like a crash.

    Sweeps (``-m a=1,2``) are composed without their swept overrides, as Hydra composes a multirun.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_group_overrides(argv, conf_dir)
    args = _command_line(argv)
    if args is None or args.config_path or args.config_dir:
        return
    overrides = _parse_overrides(args.overrides)
    if overrides is None:  # malformed: composing reports it
        fixed = list(args.overrides)
    else:
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            compose(args.config_name or config_name, overrides=fixed)
    except HydraException as err:
        cause = f"\n{err.__cause__}" if isinstance(err.__cause__, OmegaConfBaseException) else ""
        raise ConfigError(f"invalid command line: {err}{cause}") from None
    except Exception:  # noqa: BLE001 - anything else is Hydra's to report, as it would without this check
        return


# ---------------------------------------------------------------------------------------------
# Values refused by a constructor
# ---------------------------------------------------------------------------------------------
# Packages of the suite: a ValueError/TypeError their code raises while a config node is built is a
# config value the constructor refused, not a bug of Lightning or torch.
SUITE_ROOT = Path(__file__).resolve().parents[1]
SUITE_PACKAGES = frozenset({"lightning_modules", "datamodules", "callbacks", "suite"})


def _raised_by_the_suite(err: BaseException) -> bool:
    """True when the innermost frame of ``err``'s traceback lies in one of SUITE_PACKAGES."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    try:
        parts = Path(tb.tb_frame.f_code.co_filename).resolve().relative_to(SUITE_ROOT).parts
    except ValueError:  # outside the suite (torch, Lightning, ...)
        return False
    return len(parts) > 1 and parts[0] in SUITE_PACKAGES


def _node_key(err: Exception, key: str | None) -> str:
    """The config key of the node whose constructor failed: Hydra's ``full_key`` (``model.net`` when
    the net inside ``model`` failed) when it lies under ``key``, else ``key``."""
    full_key = next((line.split(":", 1)[1].strip() for line in str(err).splitlines()
                     if line.startswith("full_key:")), "")
    if not key:
        return full_key or "config"
    if not full_key or full_key == key or full_key.startswith(f"{key}."):
        return full_key or key
    return f"{key}.{full_key}"  # a node built apart from its root config: Hydra's key is relative


def refused_config_value(err: Exception, key: str | None) -> ConfigError | None:
    """The ConfigError for Hydra's InstantiationException ``err`` when a constructor of the suite refused a
    value with ValueError/TypeError (``warn > critical``, an unknown ``model.tta.aggregation``); else None.

    ``key`` is the config path of the node being built (e.g. "data"); the message names the node that refused.
    """
    cause = err.__cause__
    if isinstance(cause, ValueError | TypeError) and _raised_by_the_suite(cause):
        return ConfigError(f"{_node_key(err, key)}: {cause}")
    return None


# ---------------------------------------------------------------------------------------------
# The same ranges for command-line options of the tools
# ---------------------------------------------------------------------------------------------
def ranged_arg(key: str, kind: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse ``type=`` that converts with ``kind`` and applies the RANGE_RULES rule of the config key
    ``key`` (``data.val_fraction`` for ``--val-fraction``): a tool and a training refuse the same values,
    and argparse names the option and exits 2 before any work."""
    import argparse

    if rule_for(key) is None:
        raise ValueError(f"no range rule covers '{key}'")

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a {kind.__name__}, got {text!r}") from None
        if isinstance(value, float) and value != value:  # NaN passes every comparison
            raise argparse.ArgumentTypeError(f"expects a number, got {text!r}")
        message = value_error(key, value)
        if message:
            rule = rule_for(key)
            assert rule is not None
            why = f" ({rule.why})" if rule.why else ""
            raise argparse.ArgumentTypeError(f"must be {rule.expects}, got {value!r}{why}")
        return value

    convert.__name__ = kind.__name__
    return convert
