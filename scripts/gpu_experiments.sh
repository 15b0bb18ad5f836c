#!/usr/bin/env bash
# Issue 12's experiments on one GPU machine: the v2 data (and the stand-in backbone when
# data/demo-backbone.pth is missing), the recipe chosen on validation, the v2 ablation over 3 seeds,
# the zoom comparison, then the demo model with the chosen recipe. The same runs as on a CPU
# (scripts/run_experiments.py, scripts/make_demo_model.sh), only faster. Each phase has a time limit
# and the results are packed after each one, so a session that runs out of time still keeps them.
#
#   OUT=/some/dir SUITES=ablation,zoom,control scripts/gpu_experiments.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_experiments}
SUITES=${SUITES:-ablation,zoom}
LIMIT_S=${LIMIT_S:-400}   # the whole script, packing included
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
t0=$(date +%s)
left() { echo $(( LIMIT_S - ($(date +%s) - t0) )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/timeline.txt"; }
pack() {
  python scripts/run_experiments.py --summarise-only >/dev/null 2>&1
  tar czf "$OUT/results.tgz" $(ls docs/results/experiments.md docs/results/experiments.json docs/results/ablation.png \
    docs/results/recipe_selection.json 2>/dev/null) \
    $(find runs -maxdepth 2 \( -name status.json -o -name config.yaml -o -name metrics.jsonl -o -name log.txt \
      -o -name eval_test.json \) 2>/dev/null)
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/device.txt"

stamp "data"
case ",$SUITES," in *,control,*)
  python -m flrdf make-demo-data --version 1 --out data/demo-v1 --train-per-class 150 --test-per-class 40 --seed 0 >/dev/null 2>&1 &
esac
gpu=(--set runtime.device=cuda --set data.num_workers=8)
scripts/make_demo_model.sh --until backbone "${gpu[@]}" >"$OUT/backbone.log" 2>&1
wait
stamp "recipe selection (validation split)"
timeout $(( $(left) / 3 )) python scripts/run_experiments.py --jobs 5 --threads 2 --suites recipe \
  --set runtime.device=cuda data.num_workers=2 | grep -v '^|' | tee -a "$OUT/experiments.log"
pack
mapfile -t recipe < <(python -c "import json; [print(o) for o in json.load(open('docs/results/recipe_selection.json'))[0]['winner_overrides']]" 2>/dev/null)
stamp "recipe: ${recipe[*]:-paper (none chosen)}"
recipe_sets=(); for o in "${recipe[@]}"; do recipe_sets+=(--set "$o"); done
stamp "$SUITES"
timeout $(( $(left) - 30 )) python scripts/run_experiments.py --jobs 9 --threads 2 --suites "$SUITES" --seeds 0,1,2 \
  --set runtime.device=cuda data.num_workers=1 "${recipe[@]}" | grep -v '^|' | tee -a "$OUT/experiments.log"
pack
if [ "$(left)" -lt 100 ]; then stamp "no time left for the demo model"; stamp "done"; exit 0; fi
stamp "demo model with the chosen recipe"
timeout $(( $(left) - 25 )) scripts/make_demo_model.sh --until model "${gpu[@]}" --set runtime.eval_every=0 \
  "${recipe_sets[@]}" >"$OUT/demo.log" 2>&1
if [ -f runs/demo/eval_test.json ]; then
  python -m flrdf export --checkpoint runs/demo --model-out "$OUT/demo_model.safetensors" >/dev/null 2>&1 &&
    (cd "$OUT" && split -b 15M demo_model.safetensors demo_model.part- && rm demo_model.safetensors)
fi
pack
stamp "done"
