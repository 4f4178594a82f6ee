"""Stage-1 motion detector throughput at 640x480 on one core (goal >= 500 frames/s).

    python bench/bench_relevance_motion.py [--frames 16] [--events 20]

Prints the median frames/s over events of N frames (background + masks + regions), at the
default working resolution and at full resolution: by wall clock, and by the process's CPU time
(one thread, so CPU time is the time on one core; on a shared machine it is the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from datamodules.motion import MotionDetector  # noqa: E402


def make_event(n: int, rng: np.random.Generator) -> np.ndarray:
    scene = cv2.resize(rng.uniform(40, 200, (48, 64, 3)).astype(np.float32), (640, 480)).astype(np.uint8)
    frames = []
    for t in range(n):
        f = scene.copy()
        x = 40 + t * 30
        f[200:300, x:x + 80] = (240, 30, 30)
        frames.append(np.clip(f + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    events = [make_event(args.frames, rng) for _ in range(4)]
    print(f"motion detector, 640x480, events of {args.frames} frames, 1 thread, median of {args.events} events")
    for label, max_side in (("max_side=320 (default)", 320), ("full resolution", None)):
        detector = MotionDetector(max_side=max_side)
        detector.detect(events[0])
        wall, cpu = [], []
        for i in range(args.events):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = detector.detect(events[i % len(events)])
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        med, med_cpu = statistics.median(wall), statistics.median(cpu)
        print(f"  {label:<24} {args.frames / med:8.0f} frames/s wall ({med * 1000:.1f} ms/event), "
              f"{args.frames / med_cpu:6.0f} frames/s CPU time, {len(result.regions)} region(s)")


if __name__ == "__main__":
    main()
