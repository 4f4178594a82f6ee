"""A trained run's directory: its config, checkpoints and standard outputs, and the finished-run guard.

``RunDir`` is the one place that knows the layout ``train.py`` writes (see DESIGN.md), so that
evaluate, export, compare and the launcher read a run the same way.

A run dir that holds a finished run is never written over silently. Hydra writes ``.hydra/``
(config, overrides) into the run dir before the job starts, so the check runs twice: in the Hydra
callback ``LaunchChecks`` before Hydra touches the dir, and in ``suite.training.train`` for runs
started without Hydra's launcher (tests, notebooks).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from suite.errors import ConfigError, DataError, UserError

FINISHED_MARKER = Path("metrics") / "metrics.json"
NAMED_CHECKPOINTS = ("best", "last")


def parse_overrides(items: Sequence[str]) -> list[Any]:
    """Hydra ``Override`` objects for ``key=value`` items (Hydra's grammar: ``+key=``, lists, quoting)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for item in items:
        try:
            parsed.extend(parser.parse_overrides([item]))
        except Exception as err:  # hydra's OverrideParseException: first line names the item, the rest why
            raise ConfigError(f"cannot parse override '{item}': {'; '.join(str(err).splitlines())}") from None
    return parsed


def apply_overrides(cfg: DictConfig, items: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` overrides to an already composed config, in place (unknown keys need ``+``)."""
    for item, override in zip(items, parse_overrides(items), strict=True):
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"override '{item}': a sweep (several values) cannot apply to one run; give one value")
        if override.is_delete():
            raise ConfigError(f"override '{item}': deleting a key of a trained run's config is not supported")
        value = override.value()
        # A composed config has no groups left: model=lego would replace the model section by a string.
        current = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(current, DictConfig) and not isinstance(value, dict):
            raise ConfigError(f"override '{item}': {key} is a config section of the trained run and cannot be "
                              f"switched to another preset; override its keys instead ({key}.<name>=...)")
        try:
            OmegaConf.update(cfg, key, value, force_add=override.is_add() or override.is_force_add())
        except Exception as err:  # omegaconf ConfigAttributeError / ValidationError: first line names the key
            raise ConfigError(f"cannot apply override '{item}': {str(err).splitlines()[0]}") from None
    return cfg


@dataclass(frozen=True)
class RunDir:
    """The directory of one training run (``hydra.run.dir``, or one job of a sweep)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # -- the standard files and folders (DESIGN.md, "A run directory holds") -----------------------
    @property
    def config_yaml(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_yaml(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def overrides_yaml(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_json(self) -> Path:
        return self.path / FINISHED_MARKER

    @property
    def predictions_csv(self) -> Path:
        return self.path / "predictions_agg.csv"

    @property
    def label_map_json(self) -> Path:
        return self.path / "label_map.json"

    @property
    def splits_json(self) -> Path:
        return self.path / "splits.json"

    @property
    def history_json(self) -> Path:
        return self.path / "training_history.json"

    @property
    def manifests_txt(self) -> Path:
        return self.path / "manifests_used.txt"

    @property
    def launch_json(self) -> Path:
        return self.path / "launch.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def is_finished(self) -> bool:
        """Final metrics are written last, after test: their presence means the run completed."""
        return self.metrics_json.is_file()

    # -- reading ------------------------------------------------------------------------------------
    def config(self, overrides: Sequence[str] = (), *, output_dir: str | Path | None = None,
               weights_from_checkpoint: bool = False) -> DictConfig:
        """The run's composed config (``.hydra/config.yaml``) with ``key=value`` overrides applied.

        ``paths.output_dir`` becomes ``output_dir`` (default: this run dir) and a ``${hydra:...}``
        root dir the dir the run was launched from: outside Hydra those interpolations cannot resolve.
        ``weights_from_checkpoint`` turns off ImageNet/file weights, which a checkpoint replaces anyway.
        The config is in struct mode: an override of an unknown key fails unless written ``+key=``.
        """
        cfg = self._load_config()
        with open_dict(cfg):
            if isinstance(cfg.get("paths"), DictConfig):
                raw = OmegaConf.to_container(cfg.paths, resolve=False)
                if "${hydra:" in str(raw.get("root_dir", "")):
                    cfg.paths.root_dir = str(self.launch_cwd())
                cfg.paths.output_dir = str(Path(output_dir) if output_dir is not None else self.path)
            model = cfg.get("model")
            if weights_from_checkpoint and isinstance(model, DictConfig):
                if "pretrained" in model:
                    model.pretrained = False
                if "weights" in model:
                    model.weights = None
        OmegaConf.set_struct(cfg, True)
        return apply_overrides(cfg, overrides)

    def _load_config(self) -> DictConfig:
        path = self.config_yaml
        if not self.path.is_dir():
            raise DataError(f"{self.path} is not a run directory of this suite: the folder does not exist")
        if not path.is_file():
            raise DataError(f"{self.path} is not a run directory of this suite: {path} is missing "
                            "(train.py writes it when the run starts)")
        try:
            cfg = OmegaConf.load(path)
        except Exception as err:  # yaml's scanner/parser errors, unreadable or undecodable file
            raise DataError(f"{path} cannot be read as a run config: {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:300]}") from None
        if not isinstance(cfg, DictConfig):
            raise DataError(f"{path} is not a run config: it holds a {type(cfg).__name__}, not a mapping of keys")
        return cfg

    def launch_cwd(self) -> Path:
        """The folder ``train.py`` ran in (``.hydra/hydra.yaml``), else the current one."""
        try:
            recorded = OmegaConf.select(OmegaConf.load(self.hydra_yaml), "hydra.runtime.cwd", default=None)
        except Exception:  # missing or unreadable hydra.yaml: only a fallback hint, the cwd does
            recorded = None
        return Path(recorded) if recorded and Path(recorded).is_dir() else Path.cwd()

    def launch_overrides(self) -> list[str]:
        """The command-line overrides the run was launched with (``.hydra/overrides.yaml``); [] if none."""
        if not self.overrides_yaml.is_file():
            return []
        try:
            items = OmegaConf.to_container(OmegaConf.load(self.overrides_yaml))
        except Exception as err:  # yaml's scanner/parser errors
            raise DataError(f"{self.overrides_yaml} cannot be read: {type(err).__name__}") from None
        if not isinstance(items, list):
            raise DataError(f"{self.overrides_yaml} is not a list of overrides")
        return [str(item) for item in items]

    def metrics(self) -> dict[str, Any] | None:
        """``metrics/metrics.json`` of a finished run; None while the run is unfinished."""
        if not self.metrics_json.is_file():
            return None
        try:
            metrics = json.loads(self.metrics_json.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{self.metrics_json} cannot be read: {type(err).__name__}: {err}") from None
        if not isinstance(metrics, dict):
            raise DataError(f"{self.metrics_json} is not a mapping of metric names to values")
        return metrics

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` or ``last`` of this run, or a ``.ckpt`` file (absolute, relative to the current
        folder, to the run dir or to its ``checkpoints/``)."""
        if which in NAMED_CHECKPOINTS:
            path = self.checkpoints_dir / f"{which}.ckpt"
            if not path.is_file():
                raise DataError(f"no checkpoint at {path}: {self._checkpoints_held()}")
            return path
        given = Path(which).expanduser()
        candidates = [given] if given.is_absolute() else [given, self.path / given, self.checkpoints_dir / given]
        path = next((p for p in candidates if p.exists()), given)
        if path.is_dir():
            raise DataError(f"checkpoint {path} is a folder; give best, last or a .ckpt file")
        if not path.is_file():
            raise DataError(f"checkpoint not found: {path} (give best, last or a .ckpt file)")
        return path

    def _checkpoints_held(self) -> str:
        if not self.checkpoints_dir.is_dir():
            return f"{self.path} has no checkpoints/ folder (the run saved none yet)"
        names = sorted(p.name for p in self.checkpoints_dir.glob("*.ckpt"))
        return f"{self.checkpoints_dir} holds {', '.join(names)}" if names else f"{self.checkpoints_dir} is empty"


# -- the finished-run guard ------------------------------------------------------------------------
def is_finished(run_dir: Path) -> bool:
    return RunDir(run_dir).is_finished


def may_write_over(cfg: DictConfig) -> bool:
    """``overwrite=true``, or a fine-tune from an explicit checkpoint file, may reuse a finished dir."""
    return bool(cfg.get("overwrite", False)) or cfg.get("ckpt_path") not in (None, "last")


def guard_run_dir(out_dir: Path, cfg: DictConfig) -> None:
    """Refuse ``out_dir`` when it holds a finished run and the config does not ask to replace it."""
    if is_finished(out_dir) and not may_write_over(cfg):
        raise UserError(
            f"{out_dir} already holds a finished run ({out_dir / FINISHED_MARKER}). Choose another "
            "hydra.run.dir, or pass overwrite=true to replace its outputs."
        )


def guard_sweep_dir(sweep_dir: Path, cfg: DictConfig) -> None:
    """Refuse a sweep dir whose jobs already finished, before any job (or Hydra) writes into it."""
    if may_write_over(cfg) or not sweep_dir.is_dir():
        return
    finished = sorted(p.parent.parent for p in sweep_dir.glob(f"*/{FINISHED_MARKER}"))
    if finished:
        names = ", ".join(p.name for p in finished[:5]) + (" ..." if len(finished) > 5 else "")
        raise UserError(
            f"{sweep_dir} already holds {len(finished)} finished job(s) ({names}). Choose another "
            "hydra.sweep.dir, or pass overwrite=true to replace their outputs."
        )


def keep_previous_hydra_config(run_dir: Path, output_subdir: str | None) -> Path | None:
    """Copy an existing ``.hydra/`` aside before Hydra rewrites it (a resumed or overwritten run).

    The first launch's overrides are the record of how the run was made; a resume with
    ``ckpt_path=last`` would otherwise replace them with its own.
    """
    if not output_subdir:
        return None
    current = run_dir / output_subdir
    if not (current / "config.yaml").is_file():
        return None
    base = f"{output_subdir}.before-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    kept, suffix = run_dir / base, 1
    while kept.exists():  # two relaunches within one second
        kept, suffix = run_dir / f"{base}~{suffix}", suffix + 1
    shutil.copytree(current, kept)
    return kept


# -- what a training run writes --------------------------------------------------------------------
# Names ``train.py`` writes at the top of a run dir (DESIGN.md, "A run directory holds"). ``export/``
# and ``eval/`` are left out: export and evaluate write their own folders there, as a unit.
TRAINING_OUTPUTS = frozenset({
    ".hydra", "checkpoints", "metrics", "tensorboard", "predictions_agg.csv", "label_map.json", "splits.json",
    "manifests_used.txt", "training_history.json", "alerts.json", "report.md", "launch.json", "train.log",
    "data_fingerprint.json", "error.log",
    "csv", "mlflow", "wandb",  # the trackers of conf/logger/ besides tensorboard
})
LOCK_NAME = ".run.lock"
PREVIOUS_DIR = "previous"


def is_training_run(path: Path) -> bool:
    """A folder ``train.py`` wrote: its Hydra record, its final metrics, checkpoints or its lock (an evaluation's
    folder holds metrics too, and its ``.output.json`` marker)."""
    from suite.io import OUTPUT_MARKER

    run = RunDir(path)
    if (run.path / OUTPUT_MARKER).is_file():
        return False
    return (run.config_yaml.is_file() or run.is_finished or run.checkpoints_dir.is_dir()
            or (run.path / LOCK_NAME).is_file())


def training_run_holding(path: Path) -> tuple[Path | None, str | None]:
    """(run dir, part) when ``path`` is a training run's dir (part None) or lies inside one of its
    TRAINING_OUTPUTS (part: that name); (None, None) otherwise."""
    path = Path(path).absolute()
    if path.is_dir() and is_training_run(path):
        return path, None
    for parent in path.parents:
        part = path.relative_to(parent).parts[0]
        if part in TRAINING_OUTPUTS and parent.is_dir() and is_training_run(parent):
            return parent, part
    return None, None


# -- one training at a time per run dir ----------------------------------------------------------------
def launch_rank() -> int:
    """The process's rank when a launcher set one (DDP's extra processes run the job in rank 0's run dir:
    only rank 0 holds the run dir). Read as Lightning reads it, before Lightning starts."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


@dataclass
class _HeldLock:
    fd: int
    count: int


_held_locks: dict[Path, _HeldLock] = {}


def _read_record(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        record = json.loads(raw.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "another process (it has not written its name yet)"
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    command = " ".join(str(c) for c in record.get("command") or [])
    return f"pid {record.get('pid')} on {record.get('host')}, started {when}" + (f" ({command})" if command else "")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def acquire_run_lock(run_dir: str | Path, option: str = "hydra.run.dir") -> str | None:
    """Hold ``<run dir>/.run.lock`` until :func:`release_run_lock` (or the process ends: ``flock`` locks
    vanish with their process, so a killed run never leaves its dir locked).

    A second launch into a busy run dir is refused naming the holder (pid, host, start time, command).
    A record left by a process of this host that is gone is taken over; the returned note says so.
    A record of another host whose lock is free (a file system without shared locks, or a crashed
    machine) is refused: this host cannot tell whether that run still runs. Re-entrant within a process.
    Why by hand: ``filelock`` would give the lock but neither the holder's record nor the takeover rule.
    """
    import fcntl

    from suite.errors import UserError
    from suite.io import current_umask

    run_dir = Path(run_dir).expanduser()
    key = run_dir.resolve()
    if key in _held_locks:
        _held_locks[key].count += 1
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~current_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{option}: {run_dir} is in use by another training: {_describe(_read_record(fd))}. "
                            f"Wait for it to end, or choose another {option}.") from None
        except OSError:  # a file system without locks (ENOLCK): the record alone decides
            pass
        record = _read_record(fd)
        note = None
        host = socket.gethostname()
        slurm_job = os.environ.get("SLURM_JOB_ID")
        if record.get("pid") is not None:
            # a SLURM job requeued on another node takes its own dir back
            requeued = slurm_job is not None and record.get("slurm_job_id") == slurm_job
            if record.get("host") != host and not requeued:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                raise UserError(f"{option}: {run_dir} is in use by a training of another machine: "
                                f"{_describe(record)}. If it no longer runs, delete {path} and launch again.")
            # the lock was free: its holder ended without releasing it (killed), or its pid was reused
            gone = "no longer runs" if not _pid_alive(record["pid"]) else "no longer holds it"
            note = f"{run_dir}: took over the run dir from {_describe(record)}, which {gone}"
        mine = {"pid": os.getpid(), "host": host, "started": time.time(), "command": list(sys.argv),
                "slurm_job_id": slurm_job}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode("utf-8"), 0)
    except BaseException:
        os.close(fd)
        raise
    _held_locks[key] = _HeldLock(fd, 1)
    return note


def release_run_lock(run_dir: str | Path) -> None:
    """Undo one :func:`acquire_run_lock`; the last one empties the record and frees the lock."""
    import fcntl

    key = Path(run_dir).expanduser().resolve()
    held = _held_locks.get(key)
    if held is None:
        return
    held.count -= 1
    if held.count > 0:
        return
    del _held_locks[key]
    try:
        os.ftruncate(held.fd, 0)  # an ended run leaves no holder to name
        fcntl.flock(held.fd, fcntl.LOCK_UN)
    finally:
        os.close(held.fd)


def holds_run_lock(run_dir: str | Path) -> bool:
    return Path(run_dir).expanduser().resolve() in _held_locks


def _release_all() -> None:
    for key in list(_held_locks):
        _held_locks[key].count = 1
        release_run_lock(key)


atexit.register(_release_all)  # sys.exit after a user error: the next launch finds no stale record


# -- a new run in a dir that holds an earlier one ----------------------------------------------------
def is_resume(run_dir: Path, cfg: DictConfig) -> bool:
    """``ckpt_path=last``, or a checkpoint of this run dir's own ``checkpoints/``: the run goes on."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return False
    if str(ckpt) == "last":
        return True
    given = Path(str(ckpt)).expanduser()
    for candidate in ([given] if given.is_absolute() else [given, run_dir / given, run_dir / "checkpoints" / given]):
        if candidate.is_file():
            return candidate.resolve().is_relative_to((run_dir / "checkpoints").resolve())
    return False


def earlier_outputs(run_dir: Path, keep: Sequence[str] = ()) -> list[Path]:
    """What an earlier launch left in ``run_dir`` (the lock, ``previous/`` and ``keep`` aside)."""
    if not run_dir.is_dir():
        return []
    skip = {LOCK_NAME, PREVIOUS_DIR, *keep}
    return sorted(p for p in run_dir.iterdir() if p.name not in skip)


def move_earlier_outputs(run_dir: Path, keep: Sequence[str] = ()) -> Path | None:
    """Move what an earlier launch left into ``<run dir>/previous/<timestamp>/``, so that no file of it
    (a task file the new run does not write, an old checkpoint) sits beside the new run's outputs."""
    entries = earlier_outputs(run_dir, keep)
    if not entries:
        return None
    base = run_dir / PREVIOUS_DIR / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest, suffix = base, 1
    while dest.exists():
        dest, suffix = base.with_name(f"{base.name}~{suffix}"), suffix + 1
    dest.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, dest / entry.name)
    return dest


def prepare_run_dir(run_dir: Path, cfg: DictConfig, keep: Sequence[str] = ()) -> Path | None:
    """The finished-run guard, then: a run that starts afresh (not a resume) in a dir holding an earlier
    launch's files moves them aside first. Returns where they went (None when nothing moved)."""
    guard_run_dir(run_dir, cfg)
    if is_resume(run_dir, cfg):
        return None
    moved = move_earlier_outputs(run_dir, keep)
    if moved is not None:
        print(f"{run_dir}: moved the earlier run's files to {moved}", file=sys.stderr)
    return moved


def moved_checkpoint(run_dir: Path, path: Path) -> Path | None:
    """Where ``path`` (a file of ``run_dir``) is now when an earlier launch's files were moved aside."""
    try:
        relative = Path(path).absolute().relative_to(Path(run_dir).absolute())
    except ValueError:
        return None
    if relative.parts and relative.parts[0] == PREVIOUS_DIR:
        return None
    for kept in sorted((run_dir / PREVIOUS_DIR).glob("*"), reverse=True):
        if (kept / relative).is_file():
            return kept / relative
    return None


# -- the data a run read ---------------------------------------------------------------------------
FINGERPRINT_NAME = "data_fingerprint.json"


def _source_stat(path: Path) -> dict[str, Any]:
    """Size and last change of a source file, or of every file under a source folder."""
    if path.is_file():
        st = path.stat()
        return {"size": st.st_size, "mtime": st.st_mtime}
    if path.is_dir():
        size, mtime, files = 0, 0.0, 0
        for dirpath, _, names in os.walk(path):
            for name in names:
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                size, mtime, files = size + st.st_size, max(mtime, st.st_mtime), files + 1
        return {"size": size, "mtime": mtime, "files": files}
    return {"missing": True}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def data_fingerprint(sources: Sequence[tuple[str, int]], split_ids: dict[str, Any]) -> dict[str, Any]:
    """What identifies the data of a launch: each source (manifest, folder) with rows, size and last
    change, and a hash of each split's ids."""
    files = {str(path): {"rows": int(rows), **_source_stat(Path(path))} for path, rows in sources}
    splits = {name: {"items": len(ids), "sha256": _digest(sorted(map(str, ids)))}
              for name, ids in split_ids.items() if isinstance(ids, list)}
    return {"sources": files, "splits": splits, "sha256": _digest({"sources": files, "splits": splits})}


def data_changes(before: dict[str, Any], now: dict[str, Any], split_ids_before: dict[str, Any] | None = None,
                 split_ids_now: dict[str, Any] | None = None) -> list[str]:
    """What differs between two fingerprints, one line per source or split; [] when the data is the same."""
    if before.get("sha256") == now.get("sha256"):
        return []
    lines = []
    old_src, new_src = before.get("sources", {}), now.get("sources", {})
    for path in sorted(set(old_src) | set(new_src)):
        a, b = old_src.get(path), new_src.get(path)
        if a is None:
            lines.append(f"source added: {path} ({b.get('rows')} rows)")
        elif b is None:
            lines.append(f"source no longer read: {path}")
        elif a != b:
            what = [f"{k} {a.get(k)} -> {b.get(k)}" for k in ("rows", "size", "files") if a.get(k) != b.get(k)]
            if a.get("mtime") != b.get("mtime"):
                what.append("modified since")
            lines.append(f"source changed: {path} ({', '.join(what)})")
    old_sp, new_sp = before.get("splits", {}), now.get("splits", {})
    for name in sorted(set(old_sp) | set(new_sp)):
        a, b = old_sp.get(name), new_sp.get(name)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"split {name}: {'new' if a is None else 'gone'}")
            continue
        detail = f"{a.get('items')} -> {b.get('items')} items"
        if split_ids_before and split_ids_now and isinstance(split_ids_before.get(name), list):
            old_ids, new_ids = set(map(str, split_ids_before[name])), set(map(str, split_ids_now.get(name, [])))
            detail += f": {len(new_ids - old_ids)} added, {len(old_ids - new_ids)} removed"
        lines.append(f"split {name} differs ({detail})")
    return lines or ["the data fingerprint differs"]
