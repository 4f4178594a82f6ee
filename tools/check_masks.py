"""Check a segmentation dataset's masks before training (seed 002's debug_masks).

    python -m tools.check_masks data.root=<dir> [data.foreground_value=0] [--json report.json] [--strict]

Reads every mask with the reader training uses (datamodules/images.py) and reports: unpaired files,
unreadable or truncated files, image/mask size mismatches, EXIF orientations that cannot be matched
to the mask, masks that are not one channel of values (colour, transparency), lossy JPEG masks,
empty, all-foreground and non-binary masks, and, over the whole folder, a data.foreground_value no
mask holds or masks that are all empty. ``data.root`` may hold images/ and masks/, or train/, val/
and test/ folders that each do. Exit code 1 when training would refuse the data or read it wrong;
with --strict also when a mask is empty, all foreground or non-binary; 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.images import AmbiguousOrientation, NotAMask, SizeMismatch, list_images, pair_layout, read_mask
from datamodules.masks import MaskCheck, mask_values
from suite.errors import DataError
from suite.io import atomic_write_json

PROBLEMS = ("image_without_mask", "mask_without_image", "unreadable", "size_mismatch", "orientation", "not_a_mask",
            "lossy", "dataset", "empty", "all_foreground", "non_binary")


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
    orientation: list[str] = field(default_factory=list)
    not_a_mask: list[str] = field(default_factory=list)
    lossy: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    foreground_fraction: list[float] = field(default_factory=list)

    @property
    def unusable(self) -> int:
        return sum(len(getattr(self, name)) for name in ("size_mismatch", "unreadable", "image_without_mask",
                                                          "mask_without_image", "orientation", "not_a_mask", "lossy",
                                                          "dataset"))

    @property
    def suspicious(self) -> int:
        return len(self.empty) + len(self.all_foreground) + len(self.non_binary)


def check_folder(root: str | Path, foreground_value: float | None = None) -> MaskReport:
    """Every pair of ``root/images`` and ``root/masks`` read as training reads it."""
    root = Path(root)
    report = MaskReport(root=str(root))
    images = {p.stem: p for p in list_images(root / "images")}
    masks = {p.stem: p for p in list_images(root / "masks")}
    report.image_without_mask = sorted(str(images[s]) for s in images.keys() - masks.keys())
    report.mask_without_image = sorted(str(masks[s]) for s in masks.keys() - images.keys())
    stems = sorted(images.keys() & masks.keys())
    check = MaskCheck(where=str(root), total=len(stems))
    for stem in stems:
        report.pairs += 1
        image_path, mask_path = images[stem], masks[stem]
        try:
            mask_header = pair_layout(image_path, mask_path)[1]
            values = mask_values(read_mask(mask_path, mask_header), mask_path)
        except SizeMismatch as err:
            report.size_mismatch.append(str(err))
            continue
        except AmbiguousOrientation as err:
            report.orientation.append(str(err))
            continue
        except NotAMask as err:
            report.not_a_mask.append(str(err))
            continue
        except DataError as err:
            report.unreadable.append(str(err))
            continue
        check.checked.append(values)
        found = sorted(values.counts)
        if values.jpeg and values.distinct > 2:
            report.lossy.append(f"{mask_path}: {values.distinct} values, {values.off_binary()} of {values.pixels} "
                                "pixels neither of its two main values (JPEG; save masks as PNG)")
        elif values.distinct > 2 or (values.distinct == 2 and found[0] != 0):
            report.non_binary.append(f"{mask_path} values {found[:6]}{'...' if values.distinct > 6 else ''}")
        fraction = values.foreground(foreground_value) / values.pixels
        report.foreground_fraction.append(fraction)
        if fraction == 0.0:
            report.empty.append(str(mask_path))
        elif fraction == 1.0:
            report.all_foreground.append(str(mask_path))
    # the folder as a whole, over the masks that could be read (the others are listed per file above)
    check.total = check.read
    report.dataset = [e for e in check.errors(foreground_value) if "JPEG" not in e]
    report.warnings = check.warnings(foreground_value)
    return report


def check_root(root: str | Path, foreground_value: float | None = None) -> list[MaskReport]:
    """``root`` with images/ and masks/, or each of its train/val/test folders."""
    root = Path(root)
    splits = [root / name for name in ("train", "val", "test") if (root / name / "images").is_dir()]
    if (root / "images").is_dir() or not splits:
        return [check_folder(root, foreground_value)]
    return [check_folder(folder, foreground_value) for folder in splits]


def print_report(report: MaskReport) -> None:
    print(f"{report.root}: {report.pairs} image/mask pairs")
    if report.foreground_fraction:
        fg = np.array(report.foreground_fraction)
        print(f"  foreground fraction: mean {fg.mean():.3f}, min {fg.min():.3f}, max {fg.max():.3f}")
    for name in PROBLEMS:
        items = getattr(report, name)
        print(f"  {name.replace('_', ' ')}: {len(items)}")
        for item in items[:10]:
            print(f"    {item}")
        if len(items) > 10:
            print(f"    ... and {len(items) - 10} more")
    for warning in report.warnings:
        print(f"  warning: {warning}")


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
        description="Report masks that training would refuse or read wrong: unpaired, unreadable, mismatched, "
                    "colour, lossy, empty, all-foreground and non-binary masks, and a foreground value no mask holds.",
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
        try:
            foreground_value = None if fg_text in ("null", "None", "") else int(fg_text)
        except ValueError:
            raise DataError(f"data.foreground_value must be an integer or null, got '{fg_text}'") from None
        reports = check_root(overrides["data.root"], foreground_value)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for report in reports:
        print_report(report)
    if args.json:
        rows = [{**r.__dict__, "unusable": r.unusable, "suspicious": r.suspicious} for r in reports]
        atomic_write_json(args.json, rows[0] if len(rows) == 1 else rows)
    if any(r.unusable or (args.strict and r.suspicious) for r in reports):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
