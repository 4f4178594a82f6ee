"""Validate a composed config before anything is built.

Every node with a ``_target_`` is checked against the signature of the class or function it
names: an unknown key (a typo) or a value of the wrong type fails here, naming the full key,
instead of deep inside training. Hydra already refuses unknown keys in command-line overrides;
this also covers keys added by experiment presets or with ``+key=value``.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from suite.errors import ConfigError

# Top-level scalar keys of conf/train.yaml and their types.
TOP_LEVEL_TYPES: dict[str, Any] = {
    "task_name": str,
    "seed": int,
    "ckpt_path": str | None,
    "selection_metric": str,
    "selection_mode": str,
    "test_after_fit": bool,
    "overwrite": bool,
    "deterministic": bool,
}
TOP_LEVEL_GROUPS = {"data", "model", "trainer", "callbacks", "logger", "paths", "extras", "hydra"}
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
    """Raise :class:`ConfigError` listing every unknown key or wrongly typed value."""
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
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
