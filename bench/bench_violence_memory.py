"""Peak resident memory of training on 1k vs 10k cached sequences, and training throughput.

    python bench/bench_violence_memory.py [--sizes 1000 10000] [--steps N] [--dir /tmp/violence_bench] [--keep]

Writes float16 caches of N sequences of 30 x 4096 (the seed's VGG16 fc7 features; 1k = 0.25 GB,
10k = 2.5 GB) once under --dir, then for each size runs, in a fresh process, Lightning training of
the optimal hybrid model over the memory-mapped cache (the DataModule's dataset class, temporal
jitter included) for --steps batches, then reads the rest of the epoch so every sequence has been
touched, and reports peak RSS (sampled every 50 ms, split into anonymous and file-backed pages)
and training sequences/s. Goal: peak RSS of 10k <= 1.2x that of 1k, i.e. the features are mapped,
not loaded. ``--mode load`` reads the whole array into memory instead, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

T, D = 30, 4096


def write_cache(path: Path, n: int, seed: int = 0) -> None:
    if path.is_file():
        return
    tmp = path.with_suffix(".partial.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, T, D))
    rng = np.random.default_rng(seed)
    # fc7 features are post-ReLU: non-negative, mostly small. One random block, written rolled:
    # the values do not matter for memory or speed, and generating 2.5 GB of normals takes minutes.
    block = np.maximum(rng.standard_normal((250, T, D), dtype=np.float32), 0).astype(np.float16)
    for k, start in enumerate(range(0, n, 250)):
        stop = min(n, start + 250)
        arr[start:stop] = np.roll(block, k, axis=0)[: stop - start]
    arr.flush()
    del arr
    os.replace(tmp, path)


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def child(path: Path, steps: int | None, batch_size: int, mode: str) -> dict[str, float]:
    import lightning as L
    import torch

    from datamodules.feature_cache import MappedFeatures
    from datamodules.violence import SequenceDataset, VideoItem
    from lightning_modules.losses import FocalLoss
    from lightning_modules.nets.violence import HybridBiLSTM
    from lightning_modules.violence import ViolenceModule

    torch.manual_seed(0)
    peak: dict[str, int] = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _status()
            if now["VmRSS"] > peak["VmRSS"]:
                peak.update(now)
            time.sleep(0.05)

    before = _status()
    arrays: dict[int, object] = {0: MappedFeatures(path)}
    if mode == "load":
        class Loaded:  # the whole array in memory: what memory mapping avoids
            def __init__(self, p: Path):
                self.array = np.load(p)
                self.path = p

            def __getitem__(self, i: int) -> np.ndarray:
                return self.array[i]

        arrays = {0: Loaded(path)}
    n = len(np.load(path, mmap_mode="r"))
    items = [(0, i, VideoItem(Path(f"v{i}.mp4"), i % 2, f"g{i}")) for i in range(n)]
    dataset = SequenceDataset(arrays, items, clip_len=24, train=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    module = ViolenceModule(net=HybridBiLSTM(input_dim=D), loss=FocalLoss(gamma=3.0, alpha=None),
                            optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), l2=0.003)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps or 1.0, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", num_sanity_val_steps=0)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    seconds = time.perf_counter() - t0
    batches = trainer.global_step
    read_s = 0.0
    if steps:
        # Training stopped early: read the rest of the epoch too, so every sequence was touched.
        t1 = time.perf_counter()
        for _ in loader:
            pass
        read_s = time.perf_counter() - t1
    stop.set()
    sampler.join()
    return {"sequences": n, "batches": batches, "seconds": seconds,
            "sequences_per_s": batches * batch_size / seconds, "read_all_s": read_s,
            "rss_before_mib": before["VmRSS"], "peak_rss_mib": peak["VmRSS"], "peak_anon_mib": peak["RssAnon"],
            "peak_file_mib": peak["RssFile"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--steps", type=int, default=20,
                        help="training batches per run, then a read pass over the rest of the epoch "
                             "(0 = train on the full epoch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/violence_bench"))
    parser.add_argument("--mode", choices=["mmap", "load"], default="mmap")
    parser.add_argument("--keep", action="store_true",
                        help="keep the cache files (2.5 GiB at 10k sequences); by default each goes after its run")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps, args.batch_size, args.mode)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        path = args.dir / f"features_{n}.npy"
        t0 = time.perf_counter()
        write_cache(path, n)
        print(f"cache {path} ({path.stat().st_size / 2**30:.2f} GiB) ready in {time.perf_counter() - t0:.1f} s",
              flush=True)
        cmd = [sys.executable, __file__, "--child", str(path), "--batch-size", str(args.batch_size),
               "--mode", args.mode] + (["--steps", str(args.steps)] if args.steps else [])
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        finally:
            if not args.keep:
                path.unlink(missing_ok=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{n:>6} sequences: {result['batches']} training batches in {result['seconds']:.1f} s, "
              f"full read pass {result['read_all_s']:.1f} s, "
              f"{result['sequences_per_s']:.0f} sequences/s, peak RSS {result['peak_rss_mib']} MiB "
              f"(anon {result['peak_anon_mib']}, file-backed {result['peak_file_mib']}; "
              f"{result['rss_before_mib']} MiB before training)", flush=True)
    if len(results) >= 2:
        ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
        print(f"peak RSS ratio {results[-1]['sequences']} / {results[0]['sequences']} sequences: {ratio:.2f}x "
              f"(goal <= 1.2x)")


if __name__ == "__main__":
    main()
