"""One GPU per running sweep job: a file lock per GPU slot, held for the job's lifetime.

Why by hand: Hydra's joblib launcher reuses its worker processes, so ``CUDA_VISIBLE_DEVICES``
set for a job is ignored once CUDA has started in that worker, and ``job.num % K`` puts two
running jobs on one GPU whenever jobs finish out of order. A lock per slot is taken by the
job that runs, whatever process it runs in, and freed when the job ends (or its process dies:
``flock`` locks vanish with the process, so a crashed job never leaks its GPU).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Number of slots (or a comma list of device indices) to share out; default: the visible CUDA devices.
SLOTS_ENV = "SUITE_GPU_SLOTS"
# Where the lock files live; one directory per machine so that two sweeps on one box share the GPUs.
LOCK_DIR_ENV = "SUITE_GPU_LOCK_DIR"
# Set for the running job: the slot (device index) it holds.
SLOT_ENV = "SUITE_GPU_SLOT"


@dataclass
class Slot:
    index: int
    path: Path
    fd: int
    # wall-clock time once the lock was held (records of who held a GPU when)
    acquired_at: float = 0.0


_held: Slot | None = None


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"vision-suite-gpu-slots-{os.getuid()}")


def available_slots() -> list[int]:
    """Device indices to share out: ``SUITE_GPU_SLOTS`` ("4" or "0,2,3"), else every visible GPU."""
    spec = os.environ.get(SLOTS_ENV, "").strip()
    if spec:
        if "," in spec:
            return [int(s) for s in spec.split(",") if s.strip()]
        return list(range(int(spec)))
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no usable CUDA means no slots
        return []


def held() -> Slot | None:
    """The slot this process holds for its current job, if any."""
    return _held


def acquire(slots: list[int], lock_dir: Path | None = None, timeout_s: float | None = None,
            poll_s: float = 0.5) -> Slot:
    """Take the first free slot, waiting while every slot is busy.

    A process holds at most one slot: a worker reused for its next job gives up the
    previous job's slot first.
    """
    global _held
    if not slots:
        raise ValueError("no GPU slots to share out")
    release()
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for index in slots:
            path = lock_dir / f"gpu{index}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # The pid in the file only helps a person see who holds which GPU.
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held = Slot(index=index, path=path, fd=fd, acquired_at=time.time())
            os.environ[SLOT_ENV] = str(index)
            return _held
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no free GPU slot among {slots} in {lock_dir} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def release() -> None:
    """Free the slot this process holds (no-op when it holds none)."""
    global _held
    if _held is None:
        return
    try:
        fcntl.flock(_held.fd, fcntl.LOCK_UN)
    finally:
        os.close(_held.fd)
        _held = None
        os.environ.pop(SLOT_ENV, None)
