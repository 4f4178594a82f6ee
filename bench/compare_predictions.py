"""Agreement between two predict.py output folders of the same inputs (a checkpoint's and its bundle's).

    python bench/compare_predictions.py <out A> <out B>

Prints: rows matched by item_id, top-1 agreement of ``pred``, the largest difference of every
``score_<class>`` column, each side's backend and ms per item (its summary.json), and for behavior
outputs the agreement of every window's decision (score >= threshold) and the largest window score
difference (``window_scores`` of summary.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def main(a: Path, b: Path) -> None:
    rows_a, rows_b = (pd.read_csv(p / "predictions.csv").set_index("item_id") for p in (a, b))
    sum_a, sum_b = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    common = rows_a.index.intersection(rows_b.index)
    print(f"{a}: {sum_a['backend']}, {sum_a['items']} items, {sum_a['ms_per_item']} ms/item")
    print(f"{b}: {sum_b['backend']}, {sum_b['items']} items, {sum_b['ms_per_item']} ms/item")
    print(f"rows: {len(rows_a)} vs {len(rows_b)}, {len(common)} with the same item_id")
    if len(common):
        agree = float((rows_a.loc[common, "pred"] == rows_b.loc[common, "pred"]).mean())
        print(f"top-1 agreement (pred) on common rows: {agree:.4f}")
        for column in [c for c in rows_a.columns if c.startswith("score_")]:
            diff = np.abs(rows_a.loc[common, column].to_numpy() - rows_b.loc[common, column].to_numpy()).max()
            print(f"max |{column} A - B|: {diff:.2e}")
    windows_a, windows_b = sum_a.get("window_scores"), sum_b.get("window_scores")
    if windows_a and windows_b:
        threshold = float(sum_a["options"]["threshold"])
        pa = np.concatenate([windows_a[v]["score"] for v in sorted(windows_a)])
        pb = np.concatenate([windows_b[v]["score"] for v in sorted(windows_a)])
        print(f"windows: {len(pa)}; decision agreement (score >= {threshold:g}): "
              f"{float(((pa >= threshold) == (pb >= threshold)).mean()):.4f}; max score difference "
              f"{np.abs(pa - pb).max():.2e}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
