"""Check a segmentation dataset's masks before training (seed 002's debug_masks).

    python -m tools.check_masks data.root=<dir> [data.foreground_value=0] [--json report.json]

Reports empty masks, all-foreground masks, image/mask size mismatches, non-binary masks,
unreadable files and unpaired files. Exit code 1 when any file is unusable (unpaired, unreadable,
size mismatch); with --strict also when a mask is empty, all foreground or non-binary.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.images import image_size, list_images, read_mask
from suite.errors import DataError
from suite.io import atomic_write_json


@dataclass
class MaskReport:
    root: str
    pairs: int = 0
    empty: list[str] = field(default_factory=list)
    all_foreground: list[str] = field(default_factory=list)
    non_binary: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    image_without_mask: list[str] = field(default_factory=list)
    mask_without_image: list[str] = field(default_factory=list)
    foreground_fraction: list[float] = field(default_factory=list)

    @property
    def unusable(self) -> int:
        return len(self.size_mismatch) + len(self.unreadable) + len(self.image_without_mask) + len(
            self.mask_without_image)

    @property
    def suspicious(self) -> int:
        return len(self.empty) + len(self.all_foreground) + len(self.non_binary)


def check_folder(root: str | Path, foreground_value: int | None = None) -> MaskReport:
    root = Path(root)
    report = MaskReport(root=str(root))
    images = {p.stem: p for p in list_images(root / "images")}
    masks = {p.stem: p for p in list_images(root / "masks")}
    report.image_without_mask = sorted(str(images[s]) for s in images.keys() - masks.keys())
    report.mask_without_image = sorted(str(masks[s]) for s in masks.keys() - images.keys())
    for stem in sorted(images.keys() & masks.keys()):
        report.pairs += 1
        image_path, mask_path = images[stem], masks[stem]
        try:
            if image_size(image_path) != image_size(mask_path):
                report.size_mismatch.append(f"{mask_path} {image_size(mask_path)} vs {image_path} "
                                            f"{image_size(image_path)}")
                continue
            mask = read_mask(mask_path)
        except DataError:
            report.unreadable.append(str(mask_path if image_path.exists() else image_path))
            continue
        values = np.unique(mask)
        if len(values) > 2 or (len(values) == 2 and values[0] != 0):
            report.non_binary.append(f"{mask_path} values {values[:6].tolist()}{'...' if len(values) > 6 else ''}")
        fg = mask != 0 if foreground_value is None else mask == foreground_value
        fraction = float(fg.mean())
        report.foreground_fraction.append(fraction)
        if fraction == 0.0:
            report.empty.append(str(mask_path))
        elif fraction == 1.0:
            report.all_foreground.append(str(mask_path))
    return report


def print_report(report: MaskReport) -> None:
    print(f"{report.root}: {report.pairs} image/mask pairs")
    if report.foreground_fraction:
        fg = np.array(report.foreground_fraction)
        print(f"  foreground fraction: mean {fg.mean():.3f}, min {fg.min():.3f}, max {fg.max():.3f}")
    for name in ("image_without_mask", "mask_without_image", "unreadable", "size_mismatch", "empty",
                 "all_foreground", "non_binary"):
        items = getattr(report, name)
        print(f"  {name.replace('_', ' ')}: {len(items)}")
        for item in items[:10]:
            print(f"    {item}")
        if len(items) > 10:
            print(f"    ... and {len(items) - 10} more")


def parse_overrides(items: list[str]) -> dict[str, str]:
    known = {"data.root", "data.foreground_value"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise DataError(f"unknown argument '{item}' (expected one of: {', '.join(sorted(known))}=<value>)")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check_masks",
        description="Report empty, all-foreground, non-binary, mismatched and unpaired masks.",
    )
    parser.add_argument("overrides", nargs="+", help="data.root=<dir> [data.foreground_value=<int>]")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 also on empty/all-foreground/non-binary masks")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        if "data.root" not in overrides:
            raise DataError("data.root=<dir> is required")
        fg_text = overrides.get("data.foreground_value", "null")
        foreground_value = None if fg_text in ("null", "None", "") else int(fg_text)
        report = check_folder(overrides["data.root"], foreground_value)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        atomic_write_json(args.json, {**report.__dict__, "unusable": report.unusable,
                                      "suspicious": report.suspicious})
    if report.unusable or (args.strict and report.suspicious):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
