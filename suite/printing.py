"""Console output of a run: the composed config as a tree, the final metrics as a table, warnings."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

CONFIG_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def warn_on_console(logger: logging.Logger, message: str, prefix: str = "\n") -> None:
    """Log ``message`` as a warning and print it. Hydra's job logging writes to train.log only, so a
    warning that must reach the user watching the run is printed too."""
    logger.warning(message)
    print(f"{prefix}{message}")


def print_config_tree(cfg: DictConfig, order: Sequence[str] = CONFIG_ORDER) -> None:
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)


def print_metrics_table(metrics: Mapping[str, float], title: str = "final metrics") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
