"""The split checks every task gets from SuiteDataModule.setup: duplicates, overlap, the classes of training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from datamodules.base import SuiteDataModule, check_class_counts, file_digest
from suite.contracts import Head
from suite.errors import DataError


class Toy(SuiteDataModule):
    """Items are dicts: id, content, group, label; the splits are given as they are."""

    task = "toy"
    items_name = "images"

    def __init__(self, splits: dict[str, list[dict[str, Any]]], shared: tuple = (), **kwargs: Any):
        super().__init__(root=None, **kwargs)
        self.given, self.shared = splits, shared
        self._data_root = Path(".")

    def build_splits(self, root: Path) -> dict[str, list[dict[str, Any]]]:
        return {name: list(items) for name, items in self.given.items()}

    def item_id(self, item: dict[str, Any]) -> str:
        return item["id"]

    def group_id(self, item: dict[str, Any]) -> str | None:
        return item.get("group")

    def content_id(self, item: dict[str, Any]) -> str | None:
        return item.get("content")

    def item_labels(self, item: dict[str, Any]) -> dict[str, str | None]:
        return {"label": item.get("label")}

    def groups_shared_by_design(self) -> tuple:
        return self.shared

    def heads(self) -> tuple[Head, ...]:
        return (Head("label", ("neg", "pos"), positive=1),)


def item(name: str, label: str = "neg", content: str | None = None, group: str | None = None) -> dict[str, Any]:
    return {"id": name, "label": label, "content": content or f"bytes of {name}", "group": group}


def base_splits() -> dict[str, list[dict[str, Any]]]:
    return {"train": [item("a"), item("b", "pos")], "val": [item("c"), item("d", "pos")],
            "test": [item("e"), item("f", "pos")]}


def test_clean_splits_pass() -> None:
    dm = Toy(base_splits())
    dm.setup()
    assert [it["id"] for it in dm.splits["train"]] == ["a", "b"]


def test_duplicates_in_a_split_are_dropped_and_reported(capsys: pytest.CaptureFixture) -> None:
    splits = base_splits()
    splits["test"] += [item("e"), item("e_copy", content="bytes of e")]
    dm = Toy(splits)
    dm.setup()
    assert [it["id"] for it in dm.splits["test"]] == ["e", "f"]
    assert ("duplicates dropped (same file or content, kept once): test 2", 2) in dm.manifests_used()
    assert "e_copy = e" in capsys.readouterr().out


def test_duplicates_with_different_labels_or_one_id_for_two_items_are_refused() -> None:
    splits = base_splits()
    splits["train"].append(item("a_copy", "pos", content="bytes of a"))
    with pytest.raises(DataError, match=r"lists one image twice with different labels: a \{'label': 'neg'\} and "
                                        r"a_copy \{'label': 'pos'\}"):
        Toy(splits).setup()
    splits = base_splits()
    splits["train"].append(item("a", content="other bytes"))
    with pytest.raises(DataError, match="the train split has two different images with the id a"):
        Toy(splits).setup()


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["test"].append(item("a")), r"the train and test splits share 1 item id\(s\) \(e.g. a\)"),
    (lambda s: s["test"].append(item("a2", content="bytes of a")),
     r"the train and test splits share 1 images of the same content under other names \(e.g. a = a2\)"),
    (lambda s: (s["train"][0].update(group="g"), s["val"][0].update(group="g")),
     r"the train and val splits share 1 group\(s\) \(e.g. g\)"),
])
def test_overlap_is_refused_unless_allowed(change: Any, message: str) -> None:
    splits = base_splits()
    change(splits)
    with pytest.raises(DataError, match=message + r".*data.allow_overlap=true"):
        Toy(splits).setup()
    allowed = Toy(splits, allow_overlap=True)
    allowed.setup()
    assert any("allowed by data.allow_overlap=true" in path for path, _ in allowed.manifests_used())


def test_groups_shared_by_design_are_allowed_between_those_splits_only() -> None:
    splits = base_splits()
    splits["train"][0]["group"] = splits["val"][0]["group"] = "video1"
    Toy(splits, shared=(("train", "val"),)).setup()
    splits["test"][0]["group"] = "video1"
    with pytest.raises(DataError, match="the train and test splits share 1 group"):
        Toy(splits, shared=(("train", "val"),)).setup()


def test_training_with_one_class_or_without_the_positive_class_is_refused() -> None:
    splits = base_splits()
    splits["train"] = [item("a"), item("b")]
    with pytest.raises(DataError, match=r"the train split of .* has no 'pos' images \(head 'label': neg: 2, pos: 0\)"):
        Toy(splits).setup()
    heads = (Head("part", ("3001", "3003", "3004")),)
    with pytest.raises(DataError, match=r"holds 1 class\(es\) for head 'part' \(3001: 4, 3003: 0, 3004: 0\)"):
        check_class_counts({"part": {"3001": 4}}, heads, "the train split")
    with pytest.raises(DataError, match=r"holds 0 class\(es\) for head 'color' \(none\)"):
        check_class_counts({"color": {}}, (), "the train split")


def test_a_class_absent_from_training_warns(capsys: pytest.CaptureFixture) -> None:
    check_class_counts({"part": {"3001": 4, "3003": 1}}, (Head("part", ("3001", "3003", "3004")),), "the train split")
    assert "head 'part' has no items of class(es) 3004 (1 of 3)" in capsys.readouterr().out


def test_a_dev_subset_keeps_every_class() -> None:
    splits = base_splits()
    splits["train"] = [item(f"n{i}") for i in range(20)] + [item("p", "pos")]
    dm = Toy(splits, dev_samples=4)
    dm.setup()
    assert {it["label"] for it in dm.splits["train"]} == {"neg", "pos"}


def test_file_digest_matches_copies_and_follows_changes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 100)
    c.write_bytes(b"y" * 100)
    assert file_digest(a) == file_digest(b) != file_digest(c)
    before = file_digest(a)
    a.write_bytes(b"z" * 100)
    os.utime(a, ns=(1, 1))  # a new mtime: the cached digest is not reused
    assert file_digest(a) != before
