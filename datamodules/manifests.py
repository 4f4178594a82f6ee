"""One reader for the CSV manifests and label lists users bring, so every task reads them alike.

- Bytes are decoded as UTF-8 (a BOM is allowed); a file in another encoding is a :class:`DataError`
  naming the file and the line of the first bad byte, instead of a raw ``UnicodeDecodeError``.
- The header must name each column once; a row with more or fewer cells than the header is an error
  naming its line (a shifted row would otherwise put values under the wrong columns).
- :func:`normalize_id` makes the ids pandas and spreadsheets write as floats (``3001.0``, a column
  with empty cells becomes float) the ids they were (``3001``), so one id never becomes two classes.
- :func:`integer_id` validates ids that must be numbers (colour ids), naming the line of a bad one.
- :func:`read_id_list` reads a one-id-per-line file (LEGO's ``target_parts.txt``).

The standard library's ``csv`` does the parsing; what is written here is only the checks and the
messages, which neither ``csv`` nor pandas gives with the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from suite.errors import DataError

#: an integer written as a float: "3001.0", "14.", "-1.00"
_FLOAT_INTEGER = re.compile(r"^([+-]?\d+)\.0*$")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Table:
    """A CSV file read as text: its header and its rows, each with the line a user sees in an editor."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]

    def where(self, index: int) -> str:
        """``<file>, line N`` of row ``index``."""
        return f"{self.path}, line {self.lines[index]}"

    def require(self, columns: dict[str, str]) -> None:
        """Every ``{column: config key}`` in the header, or a DataError naming the missing ones and their keys."""
        missing = [f"{col} ({key})" if key else col for col, key in columns.items() if col not in self.header]
        if missing:
            raise DataError(f"{self.path}: missing column(s) {', '.join(missing)}; the header has {self.header}")


def read_text(path: Path, what: str = "file") -> str:
    """The text of ``path`` (UTF-8, BOM allowed); a DataError naming the file and line otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a {what} (give the path of the file)")
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or iconv -f latin1 -t utf-8)"
        ) from None


def read_table(path: Path, what: str = "manifest") -> Table:
    """A CSV file as a :class:`Table` of stripped strings (an empty cell is ``""``)."""
    path = Path(path)
    text = read_text(path, what)
    if "\x00" in text:  # a NUL is no text: a binary or UTF-16 file, and no path or id may hold one
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}, line {line}: a NUL byte; this is not a text CSV file (UTF-16? save it as UTF-8)")
    # newline="": csv itself finds the line ends, so quoted cells may hold line breaks
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path}: empty {what} (no header line)")
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise DataError(f"{path}: column(s) {repeated} appear more than once in the header")
        rows, lines = [], []
        for cells in reader:
            line = reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue  # blank lines (also ",,,") carry nothing
            if len(cells) != len(header):
                raise DataError(f"{path}, line {line}: {len(cells)} cell(s) for the {len(header)} columns of the "
                                "header (a stray comma, or an unquoted value holding one?)")
            rows.append({h: c.strip() for h, c in zip(header, cells, strict=True)})
            lines.append(line)
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: not a readable CSV row ({err})") from None
    return Table(path, header, rows, lines)


def normalize_id(value: object) -> str:
    """An id as text: whitespace stripped and an integer written as a float (``3001.0``) made ``3001``.

    Other text is kept as it is (part numbers such as ``3040a`` are ids, not numbers; ``007`` stays
    ``007`` because leading zeros may be part of an id).
    """
    text = str(value).strip()
    match = _FLOAT_INTEGER.match(text)
    return str(int(match.group(1))) if match else text


def integer_id(value: str, where: str, column: str) -> str:
    """``value`` (already normalised) as an integer id; a DataError naming ``where`` and ``column`` otherwise."""
    if not _INTEGER.match(value):
        raise DataError(f"{where}: {column} must be an integer id, got {value!r}")
    return str(int(value))


def read_id_list(path: Path, what: str) -> list[str]:
    """One id per line (``#`` starts a comment), normalised and de-duplicated in order; never empty."""
    lines = [ln.split("#", 1)[0] for ln in read_text(path, what).splitlines()]
    ids = [normalize_id(ln) for ln in lines if ln.strip()]
    if not ids:
        raise DataError(f"{path}: no ids in this {what} (one per line)")
    return list(dict.fromkeys(ids))
