"""Figure plumbing shared by the sections: Agg backend, one save call, one caption format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: reports are written by training jobs and CLIs on headless machines

import matplotlib.pyplot as plt  # noqa: E402

DPI = 90


@dataclass
class Section:
    """One part of report.md: its heading and its Markdown body (figures already saved)."""

    title: str
    body: str

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.body.strip()}\n"


def save(fig: Any, folder: Path, name: str) -> str:
    """Save ``fig`` as ``folder/<name>.png`` and close it; returns the path report.md links (``report/<name>.png``)."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return f"{folder.name}/{name}.png"


def figure_md(link: str, caption: str) -> str:
    """The picture and its caption (what it shows and the numbers behind it) as Markdown."""
    alt = Path(link).stem.replace("_", " ")
    return f"![{alt}]({link})\n\n*{caption}*\n"


def fmt(value: Any, digits: int = 4) -> str:
    """A metric value for a table: numbers rounded, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "—" if value != value else f"{value:.{digits}g}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; cells go through :func:`fmt` and lose their pipes."""
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
