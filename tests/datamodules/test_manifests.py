"""The shared manifest reader, and the property every manifest reader keeps: a manifest either loads as what
it says or fails with a DataError naming the file; never another exception, never a silent drop.

The property tests generate LEGO manifests (columns in any order, extra and missing columns, ids written as
int, float, text, padded or empty, unknown markers, bad colour ids, unmapped sources, repeated rows, copies
of an image under another name, missing images, UTF-8 / BOM / Latin-1 bytes, a target parts list) and
behavior manifests (labels as names, indices or floats, bad labels, times as text, inf or empty, ids as
floats), and compare what the reader gives with what an independent reading of the rows expects.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.behavior import read_manifest as read_behavior_manifest
from datamodules.lego import LegoDataModule
from datamodules.manifests import integer_id, normalize_id, read_id_list, read_table
from suite.errors import DataError

# -- the reader --------------------------------------------------------------------------------------------


def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes("path,source\na.png,real\nb.png,r\xe9al\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"m.csv, line 3: not UTF-8 text \(byte 0xe9"):
        read_table(path)


def test_bom_blank_lines_quotes_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('\ufeffpath , part\n\na.png, 3001.0 \n"b,\nc.png",3003\n,\n', encoding="utf-8")
    table = read_table(path)
    assert table.header == ["path", "part"]
    assert table.rows == [{"path": "a.png", "part": "3001.0"}, {"path": "b,\nc.png", "part": "3003"}]
    assert table.lines == [3, 5] and table.where(1).endswith("m.csv, line 5")


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty manifest"),
    ("a,a\n1,2\n", r"\['a'\] appear more than once"),
    ("a,b\n1,2,3\n", r"line 2: 3 cell\(s\) for the 2 columns"),
    ("a,b\n1\n", r"line 2: 1 cell\(s\) for the 2 columns"),
    ("a,b\n1,\x00\n", "line 2: a NUL byte"),
    ('a,b\n1,"' + "x" * 200_000 + '"\n', "line 2: not a readable CSV row"),
])
def test_malformed_tables_are_data_errors_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_a_folder_or_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="a folder, not a manifest"):
        read_table(tmp_path)
    with pytest.raises(DataError, match="manifest not found"):
        read_table(tmp_path / "nope.csv")


def test_ids() -> None:
    assert [normalize_id(v) for v in ("3001.0", " 14 ", "14.", "-1.00", "3040a", "007", "3.5", "1e3")] == \
        ["3001", "14", "14", "-1", "3040a", "007", "3.5", "1e3"]
    assert integer_id("14", "f, line 2", "color_id") == "14"
    with pytest.raises(DataError, match="f, line 2: color_id must be an integer id, got 'abc'"):
        integer_id("abc", "f, line 2", "color_id")


def test_id_list(tmp_path: Path) -> None:
    path = tmp_path / "parts.txt"
    path.write_text("3001.0\n# comment\n 3003 # inline\n3001\n\n")
    assert read_id_list(path, "list") == ["3001", "3003"]
    path.write_text("# nothing\n")
    with pytest.raises(DataError, match="no ids"):
        read_id_list(path, "list")


# -- LEGO manifests: the property ---------------------------------------------------------------------------

IMAGES = [f"img/p{i}.png" for i in range(5)]
COPY = "img/copy_of_p0.png"  # the bytes of p0 under another name
MISSING = "img/missing.png"
COLUMNS = ["path", "part_id", "color_id", "source", "group_id"]
PARTS = st.sampled_from(["3001", "3001.0", " 3001 ", "3003", "3003.00", "3040a", "", "9999", "9999.0", "42"])
COLORS = st.sampled_from(["4", "4.0", "14", " 14 ", "", "9999", "9999.0", "0", "abc"])
SOURCES = st.sampled_from(["real", "legacy", "b200c", "real", "scan"])


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lego_pool")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    for rel in IMAGES:
        cv2.imwrite(str(root / rel), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    shutil.copy(root / IMAGES[0], root / COPY)
    return root


lego_rows = st.lists(st.fixed_dictionaries({
    "path": st.sampled_from([*IMAGES, COPY, MISSING, IMAGES[1]]), "part_id": PARTS, "color_id": COLORS,
    "source": SOURCES, "group_id": st.sampled_from(["", "g1", "g2", "7.0"]), "note": st.sampled_from(["", "é"]),
}), min_size=0, max_size=8)


def _expected_lego(rows: list[dict[str, str]], columns: list[str], encoding: str,
                   targets: list[str] | None) -> list[tuple[str, str | None, str | None]] | None:
    """What the manifest says, read independently: the kept (path, part, colour), or None for a DataError."""
    if any(c not in columns for c in ("path", "part_id", "color_id", "source")) or not rows:
        return None
    if encoding == "latin-1" and any("é" in r["note"] for r in rows) and "note" in columns:
        return None

    def known(value: str) -> str | None:
        value = value.strip()
        value = value[: value.index(".")] if "." in value and value.split(".")[1].strip("0") == "" else value
        return None if value in ("", "9999") else value

    kept = []
    for r in rows:
        part, color = known(r["part_id"]), known(r["color_id"])
        if r["source"] == "scan" or (color is not None and not color.isdigit()):
            return None
        if targets is not None and part is not None and part not in targets:
            continue
        kept.append((r["path"], part, color))
    present = {known(r["part_id"]) for r in rows} - {None}
    if targets is not None and present and not present & set(targets):
        return None
    if any(path == MISSING for path, _, _ in kept):
        return None
    kept = [k for k in kept if k[1] is not None or k[2] is not None]
    if not kept:
        return None
    out: dict[str, tuple[str, str | None, str | None]] = {}
    for path, part, color in kept:
        content = IMAGES[0] if path == COPY else path
        if content in out:
            if out[content][1:] != (part, color):
                return None  # one image, two labels
            continue
        out[content] = (path, part, color)
    return sorted(out.values(), key=str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=lego_rows, order=st.permutations(COLUMNS + ["note"]), drop=st.sampled_from([None, "part_id", "group_id"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]),
       targets=st.sampled_from([None, ["3001"], ["3001", "3003", "777"], ["777"]]))
def test_any_lego_manifest_loads_as_written_or_names_the_file(
    image_pool: Path, rows: list[dict[str, str]], order: list[str], drop: str | None, encoding: str,
    targets: list[str] | None,
) -> None:
    columns = [c for c in order if c != drop]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    manifest = image_pool / "manifest.csv"
    manifest.write_bytes(buffer.getvalue().encode(encoding))
    target_file = image_pool / "targets.txt"
    target_file.unlink(missing_ok=True)
    if targets is not None:
        target_file.write_text("\n".join(targets) + "\n")
    columns_cfg = {"group": "group_id" if "group_id" in columns else None}
    dm = LegoDataModule(root=str(image_pool), manifest="manifest.csv", target_parts="targets.txt",
                        columns=columns_cfg)
    expected = _expected_lego(rows, columns, encoding, targets)
    try:
        got = dm._read()
    except DataError as err:
        assert str(manifest) in str(err) or str(target_file) in str(err), f"the message names no file: {err}"
        assert expected is None, f"refused a manifest that says {expected}: {err}"
        return
    assert expected is not None, f"loaded a manifest that should be refused: {rows}"
    assert sorted(((r["name"], r["part"], r["color"]) for r in got), key=str) == expected


# -- behavior manifests: the property -----------------------------------------------------------------------

BEHAVIOR_COLUMNS = ["video_path", "video_id", "start_s", "end_s", "label"]
behavior_rows = st.lists(st.fixed_dictionaries({
    "video_path": st.sampled_from(["a.mp4", "b.mp4", ""]),
    "video_id": st.sampled_from(["v1", "2", "2.0", " v3 ", ""]),
    "start_s": st.sampled_from(["0", "1.5", "-1", "x", "", "inf"]),
    "end_s": st.sampled_from(["2", "3.25", "1.5", "nan", ""]),
    "label": st.sampled_from(["normal", "tail", "0", "1", "1.0", " tail ", "jumping", ""]),
    "event_id": st.sampled_from(["e1", "e2", ""]),
}), min_size=0, max_size=6)


def _expected_behavior(rows: list[dict[str, str]], columns: list[str]) -> list[tuple] | None:
    if any(c not in columns for c in BEHAVIOR_COLUMNS):
        return None
    labels = {"normal": 0, "tail": 1, "0": 0, "1": 1, "1.0": 1}
    out = []
    for r in rows:
        fields = [r[c] for c in columns]
        if not any(f.strip() for f in fields):
            continue  # a blank row
        if not r["video_path"] or not r["video_id"].strip() or ("event_id" in columns and not r["event_id"]):
            return None
        if r["label"].strip() not in labels:
            return None
        try:
            start, end = float(r["start_s"]), float(r["end_s"])
        except ValueError:
            return None
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
            return None
        video = r["video_id"].strip()
        out.append((r["video_path"], "2" if video == "2.0" else video, start, end, labels[r["label"].strip()]))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=behavior_rows, order=st.permutations(BEHAVIOR_COLUMNS + ["event_id"]),
       drop=st.sampled_from([None, "event_id", "end_s"]))
def test_any_behavior_manifest_loads_as_written_or_names_the_file(
    tmp_path: Path, rows: list[dict[str, str]], order: list[str], drop: str | None,
) -> None:
    columns = [c for c in order if c != drop]
    path = tmp_path / "events.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    expected = _expected_behavior(rows, columns)
    try:
        df = read_behavior_manifest(path, ["normal", "tail"])
    except DataError as err:
        assert str(path) in str(err), f"the message names no file: {err}"
        assert expected is None, f"refused a manifest that says {expected}: {err}"
        return
    assert expected is not None, f"loaded a manifest that should be refused: {rows}"
    got = list(zip(df["video_path"], df["video_id"], df["start_s"], df["end_s"], df["label_idx"], strict=True))
    assert got == expected
