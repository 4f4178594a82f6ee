"""How a DataLoader uses the machine: workers, prefetch, pinning and decode threads, chosen from the cores.

``data.num_workers: auto`` (and ``data.pin_memory: auto``) resolve here; an explicit value always wins.
The policy, in order:

- **The launch's share.** The cores this process may use (``os.sched_getaffinity``: a SLURM or taskset
  limit counts) divided by the processes that run at once on them: the parallel jobs of a local sweep
  (:func:`set_launch_share`, called by ``suite.launch.prepare_job``) and the trainer's processes on this
  machine (DDP). Each process then keeps to its share, torch threads and loader workers together, so
  ``n_jobs x (workers + torch threads)`` never exceeds the cores.
- **Tiny loaders load in the main process.** Forking workers and filling their queues costs about a
  batch's load per worker before the first batch; a loader with fewer than :data:`MIN_BATCHES_FOR_WORKERS`
  batches per epoch (``debug=fast``'s 2 batches, a single-batch test set) cannot win that back, and
  ``data.dev_samples`` (``debug=dev``, quick iterations) loads in the main process too.
- **Workers start afresh each epoch** (not persistent): a loader's iterator then draws its workers' seed
  from the run's generator every epoch, as a run without workers does, so a run resumed from a checkpoint
  continues exactly as the uninterrupted one (persistent workers keep the first epoch's seed and
  generators, which a resumed run cannot recreate). A fork costs milliseconds; the first batch of an epoch
  waits for one batch's load, which the main process would have spent anyway.
- **Workers from the share.** Training on a GPU leaves the CPU to the loader: every core of the share but
  one (the main process feeding the GPU) becomes a worker, at most :data:`MAX_WORKERS`. Training on the CPU
  splits the share: a quarter for workers, the rest for the step's torch threads, which are lowered to
  fit when they would not (they default to every physical core of the machine); on fewer than 4 cores
  one worker loads beside the step, which keeps all its threads (measured faster than either alternative),
  except in a sweep job, where the jobs' workers together would oversubscribe the cores.
- **Prefetch** keeps about :data:`BATCHES_IN_FLIGHT` batches queued whatever the worker count, so one
  slow batch (a long video seek) does not stall the step.
- **Pinned memory** only when the trainer runs on CUDA: pinning buys nothing on the CPU and costs a copy.
- **Decode threads** (PyAV, OpenCV) are one per worker: the share is already spread over the workers,
  and a thread pool per worker would oversubscribe the cores. Without workers the main process decodes
  with its whole share (the step waits for it anyway).

Workers are forked (see ``SuiteDataModule.make_loader`` for why); the fork happens after torch has
started its thread pool (OpenMP's is not fork-safe), which is safe because each worker runs torch on one
thread (PyTorch's worker loop sets it; :func:`worker_init` sets PyAV to one) and so never enters the
parent's pool; OpenCV is set to one thread in the parent before the fork (:func:`prepare_fork`: its pool
cannot be resized in a forked child); CUDA is never touched in a worker (batches reach the GPU in the main process).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from suite.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
#: a loader with fewer batches per epoch loads them in the main process: worker start-up would dominate a
#: debug run's 2 batches; from a few batches on, loading them in parallel wins it back
MIN_BATCHES_FOR_WORKERS = 4
#: more workers than this rarely pay: each holds a copy of the dataset's state and its prefetched batches
MAX_WORKERS = 8
#: batches queued ahead of the step over all workers (prefetch_factor = this / workers, at least 2)
BATCHES_IN_FLIGHT = 4
#: share of a CPU-training process's cores given to loader workers (the rest run the step)
CPU_WORKER_SHARE = 0.25

# Set once per process by the launcher (suite.launch.prepare_job): how many jobs share this machine's cores.
_LAUNCH_JOBS = 1


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cgroups/SLURM), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_launch_share(jobs: int) -> None:
    """Record that ``jobs`` processes of one launch run at once on this machine's cores (a local sweep)."""
    global _LAUNCH_JOBS
    _LAUNCH_JOBS = max(1, int(jobs))


def launch_jobs() -> int:
    return _LAUNCH_JOBS


def core_share(cores: int | None = None, jobs: int | None = None, processes: int = 1) -> int:
    """Cores for this process: ``cores`` split between the launch's ``jobs`` and the trainer's local ``processes``."""
    cores = available_cores() if cores is None else cores
    jobs = launch_jobs() if jobs is None else jobs
    return max(1, cores // max(1, jobs * max(1, processes)))


@dataclass(frozen=True)
class LoaderOptions:
    """What a DataLoader is built with, and the torch threads the step should keep to (None: leave as is)."""

    num_workers: int
    pin_memory: bool
    prefetch_factor: int | None
    persistent_workers: bool
    decode_threads: int
    torch_threads: int | None
    share: int
    reason: str

    def describe(self) -> str:
        prefetch = f", prefetch {self.prefetch_factor}" if self.num_workers else ""
        threads = f", torch threads {self.torch_threads}" if self.torch_threads is not None else ""
        return (f"{self.num_workers} worker(s){prefetch}, pin_memory {self.pin_memory}, "
                f"decode threads {self.decode_threads}{threads} ({self.reason}; share {self.share} core(s))")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_workers(value: Any, key: str = "data.num_workers") -> int | None:
    """``auto`` -> None (the policy decides); a count >= 0 -> that count; anything else a ConfigError."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{key}: expected 'auto' or a count >= 0, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected 'auto' or a count >= 0, got {value!r}") from None
    if count < 0:
        raise ConfigError(f"{key}: expected 'auto' or a count >= 0, got {value!r}")
    return count


def parse_pin(value: Any, key: str = "data.pin_memory") -> bool | None:
    """``auto`` (or null) -> None (pin on CUDA only); true/false as given."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected 'auto', true or false, got {value!r}")


def resolve(
    num_workers: Any = AUTO,
    pin_memory: Any = AUTO,
    *,
    batches: int | None = None,
    on_cuda: bool = False,
    share: int | None = None,
    torch_threads: int | None = None,
    dev_mode: bool = False,
) -> LoaderOptions:
    """The loader options for one loader (see the module docstring for the policy).

    ``batches``: batches the loader yields per epoch (None: unknown, assumed large); ``on_cuda``: the
    trainer steps on a CUDA device; ``share``: this process's cores (default :func:`core_share`);
    ``torch_threads``: the step's torch threads now (default ``torch.get_num_threads()``); ``dev_mode``:
    ``data.dev_samples`` is set (a quick iteration run: no workers).
    """
    import torch

    share = core_share() if share is None else max(1, share)
    torch_threads = torch.get_num_threads() if torch_threads is None else torch_threads
    requested = parse_workers(num_workers)
    pin = parse_pin(pin_memory)
    pin = on_cuda if pin is None else pin
    new_threads: int | None = None
    if requested is not None:
        workers, reason = requested, "data.num_workers as set"
    elif dev_mode:
        workers, reason = 0, "dev mode (data.dev_samples): loading in the main process"
    elif batches is not None and batches < MIN_BATCHES_FOR_WORKERS:
        workers, reason = 0, f"{batches} batch(es) per epoch: worker start-up would cost more than it saves"
    elif share < 2:
        workers, reason = 0, "a single core: workers would only compete with the step"
    elif on_cuda:
        workers, reason = min(MAX_WORKERS, share - 1), "GPU step: every core of the share but one loads"
    elif share * CPU_WORKER_SHARE < 1:
        # Measured on 2 cores (bench/bench_loaders.py): one worker decoding beside the step's threads made the
        # training steps of behavior, violence and lego 2-23 % shorter than loading in the main process, and
        # their wait for data fell from 0.11-0.30 of a step to 0.01; the step keeps its threads (lowering them
        # to make room would cost far more than the worker takes: it mostly waits on the decoder and the disk)
        # ... but a sweep's jobs together would then run more processes than there are cores
        if launch_jobs() > 1:
            workers, reason = 0, "a sweep job's share of fewer than 4 cores: the step keeps it (no oversubscription)"
        else:
            workers, reason = 1, "CPU step on fewer than 4 cores: one worker beside the step's threads"
    else:
        workers = min(MAX_WORKERS, int(share * CPU_WORKER_SHARE))
        reason = "CPU step: a quarter of the share loads, the rest steps"
        if torch_threads + workers > share:
            new_threads = max(1, share - workers)
    if requested is None and batches is not None:
        workers = min(workers, batches)  # a worker without a batch to load only costs its start-up
    prefetch = max(2, math.ceil(BATCHES_IN_FLIGHT / workers)) if workers else None
    decode = 1 if workers else max(1, min(share, torch_threads if new_threads is None else new_threads))
    return LoaderOptions(num_workers=workers, pin_memory=bool(pin), prefetch_factor=prefetch,
                         persistent_workers=False, decode_threads=decode, torch_threads=new_threads,
                         share=share, reason=reason)


def prepare_fork() -> None:
    """Before forking workers: OpenCV in this process runs on one thread. Its pool is copied by a fork without
    its threads, and a worker that used or resized it would wait for them forever; with one thread there is
    no pool (the loading now happens in the workers, so this process loses nothing it uses)."""
    import cv2

    cv2.setNumThreads(1)


def worker_init(worker_id: int) -> None:
    """Each forked worker: one thread for torch and the video decoder (OpenCV: :func:`prepare_fork`; the
    share is spread over the workers already), then Lightning's per-worker seeding when the run asked for it
    (``seed_everything(..., workers=True)``), which a loader with its own ``worker_init_fn`` would lose."""
    import torch

    from datamodules import video

    # OpenCV's thread count is set in the parent before the fork (prepare_fork): cv2.setNumThreads here
    # joins pool threads the fork did not copy and hangs the worker for good
    torch.set_num_threads(1)
    video.set_decode_threads(1)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
