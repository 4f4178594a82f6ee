#!/usr/bin/env bash
# GPU check: AMP (16-mixed) and bf16-mixed training steps, torch.compile, throughput per task
# (bench/gpu_check.py), then a 2-job sweep sharing one GPU through the slot locks, and DDP on 2 devices
# when there are 2. Results go to ${GPU_CHECK_OUT:-gpu_check} (gpu_check.json, sweep log).
#
#   bash bench/gpu_check.sh                 # on a GPU machine with the suite installed
#   WHEELS=.whl bash bench/gpu_check.sh     # install the suite's missing dependencies from wheels first
#   SKIP_STEPS=1 bash bench/gpu_check.sh    # only the sweep (and DDP) checks
#
# Without a GPU it says so and exits 0: everything else in the suite runs on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
# the suite's venv when there is one (make install), else the machine's python3 (a GPU image with torch)
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
OUT=${GPU_CHECK_OUT:-gpu_check}
mkdir -p "$OUT"
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -n "${WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch; run make install, or set PYTHON=<a python with torch>"
  exit 1
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device on this machine; nothing to check"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")

if [ -z "${SKIP_STEPS:-}" ]; then
  echo "== per-task training step: fp32 / 16-mixed / bf16-mixed / bf16 + compile"
  "$PY" bench/gpu_check.py --steps "${STEPS:-20}" --json "$OUT/gpu_check.json"
fi

echo "== 2-job sweep on $GPUS GPU(s): each job holds a GPU slot (suite/gpu_slots.py)"
SWEEP_DIR="$OUT/sweep"
rm -rf "$SWEEP_DIR"
start=$(date +%s)
"$PY" train.py -m hydra/launcher=local hydra.launcher.n_jobs=2 experiment=segmentation trainer=gpu \
  model.pretrained=false seed=1,2 debug=fast hydra.sweep.dir="$SWEEP_DIR" \
  > "$OUT/sweep.log" 2>&1
rc=$?
echo "sweep exit $rc in $(( $(date +%s) - start )) s (log: $OUT/sweep.log)"
for job in "$SWEEP_DIR"/*/; do
  [ -f "$job/launch.json" ] && "$PY" - "$job/launch.json" <<'PYEOF'
import json, sys
info = json.load(open(sys.argv[1]))
print({k: v for k, v in info.items()
       if k in ("job_num", "pid", "gpu_slot", "waited_s", "slot_acquired_at", "slot_released_at", "trainer_devices")})
PYEOF
done

if [ "$GPUS" -ge 2 ]; then
  echo "== DDP on 2 devices"
  "$PY" train.py experiment=segmentation trainer=ddp trainer.devices=2 model.pretrained=false debug=fast \
    hydra.run.dir="$OUT/ddp" > "$OUT/ddp.log" 2>&1
  echo "ddp exit $? (log: $OUT/ddp.log)"
else
  echo "== DDP: skipped, this machine has $GPUS GPU"
fi
