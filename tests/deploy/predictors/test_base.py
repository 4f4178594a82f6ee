"""The predictor base: options typed like their defaults, booleans read by their words."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from deploy.predictors.base import Predictor
from suite.errors import ConfigError


class _Backend:
    name = "fake"
    meta: ClassVar[dict[str, Any]] = {"task": "fake", "heads": [{"name": "label", "classes": ["a", "b"]}]}


class _Fake(Predictor):
    task = "fake"
    defaults: ClassVar[dict[str, Any]] = {"tile": True, "stride_s": 1.0, "top_k": 5, "mode": "tile"}


@pytest.mark.parametrize(("word", "expected"), [("false", False), ("False", False), ("0", False), ("no", False),
                                                ("true", True), ("1", True), ("yes", True)])
def test_boolean_options_read_by_their_words(word: str, expected: bool) -> None:
    assert _Fake(_Backend(), {"tile": word}).options["tile"] is expected


def test_options_take_the_type_of_their_default() -> None:
    options = _Fake(_Backend(), {"stride_s": "0.5", "top_k": "3", "mode": "resize"}).options
    assert options == {"tile": True, "stride_s": 0.5, "top_k": 3, "mode": "resize"}


@pytest.mark.parametrize(("key", "value"), [("tile", "maybe"), ("stride_s", "fast"), ("stride_s", "nan"),
                                            ("top_k", "2.5"), ("top_k", True)])
def test_bad_option_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        _Fake(_Backend(), {key: value})


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="top_k"):
        _Fake(_Backend(), {"topk": "3"})
