"""A run's human-readable report: ``report.md`` with its pictures in ``report/``.

One module per kind of content (summary and verdict, alarms and curves, confusion and calibration,
breakdown tables, worst items); :func:`write_run_report` assembles them. Torch-free except the
segmentation overlays, which re-run the run's model on a few images.
"""

from suite.report.writer import REPORT_DIR, REPORT_MD, render, write_run_report

__all__ = ["REPORT_DIR", "REPORT_MD", "render", "write_run_report"]
