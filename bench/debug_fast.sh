#!/usr/bin/env bash
# Wall time of `debug=fast` per task on the real data of ../shared/data (model.pretrained=false, the
# violence preset's VGG16 untrained). Usage: bench/debug_fast.sh [task ...]  (default: all six runs)
# Prints one line per run: task, wall and CPU seconds, whether it finished; logs under $OUT
# (default /tmp/debug_fast).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/debug_fast}
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"
common=(debug=fast model.pretrained=false "paths.cache_dir=$OUT/cache")
run() {  # name, then train.py arguments
  local name=$1; shift
  rm -rf "$OUT/$name"
  # wall time and the CPU seconds of the run: on a busy machine the CPU time is the steadier figure
  local TIMEFORMAT="%R %U %S" times status
  times=$( { time "$PY" train.py "$@" "${common[@]}" "hydra.run.dir=$OUT/$name" >"$OUT/$name.log" 2>&1; } 2>&1 )
  read -r wall user sys <<<"$(tail -n1 <<<"$times")"
  # finished = the run wrote metrics/metrics.json (the console table's title wraps on a narrow terminal)
  status=$([ -f "$OUT/$name/metrics/metrics.json" ] && echo ok || echo FAILED)
  printf '%-24s wall %6.1f s  cpu %6.1f s  %s\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$status"
}
tasks=("${@:-segmentation behavior violence relevance_contrastive relevance_segmentation lego}")
for task in ${tasks[@]}; do
  case $task in
    segmentation) run segmentation experiment=segmentation "data.root=$DATA/segmentation/isbi2012_em"
      ;;
    behavior)
      "$PY" -m tools.make_splits --clips-dir "$DATA/grouped_video" --labels "$DATA/grouped_video/labels.csv" \
        --video-id-column source_group --tail-label fight --out-dir "$OUT/behavior_splits" \
        --timestamp 20260105_000000 >/dev/null
      run behavior experiment=intravideo "data.root=$OUT/behavior_splits" 'data.class_names=[nofight,fight]' \
        data.tail_class=fight
      ;;
    violence) run violence experiment=violence_failed "data.root=$DATA/violence" data.frame_encoder.pretrained=false
      ;;
    relevance_contrastive) run relevance_contrastive experiment=relevance_contrastive "data.root=$DATA/motion"
      ;;
    relevance_segmentation) run relevance_segmentation experiment=relevance_segmentation "data.root=$DATA/motion"
      ;;
    lego) run lego experiment=lego_multitask "data.root=$DATA/lego" data.manifest=labels.csv \
        data.columns.part=part_num data.columns.color=color_id_rebrickable data.columns.source=subset \
        data.columns.group=group_id +data.source_map.parts_real=real +data.source_map.red_parts_real=real \
        +data.source_map.colors_real=real +data.source_map.red_parts_render=legacy
      ;;
    *) echo "unknown task $task" >&2; exit 2 ;;
  esac
done
