#!/usr/bin/env bash
# Issue 12's experiments in one GPU session: the v1/v2 data, the stand-in backbone, the recipe chosen
# on validation, the v2 ablation over 3 seeds, the zoom comparison, the v1 control, then the demo model
# with the chosen recipe. The same runs as on a CPU (scripts/run_experiments.py), only faster.
#
#   OUT=/some/dir scripts/gpu_experiments.sh      # results land in $OUT (default runs/gpu_experiments)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_experiments}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/device.txt"

stamp "data"
python -m flrdf make-demo-data --version 1 --out data/demo-v1 --train-per-class 150 --test-per-class 40 --seed 0 >/dev/null 2>&1 &
python -m flrdf make-demo-data --version 2 --out data/pretrain --train-per-class 150 --test-per-class 20 --seed 1000 >/dev/null 2>&1 &
python -m flrdf make-demo-data --version 2 --out data/demo --train-per-class 150 --test-per-class 40 --seed 0 >/dev/null 2>&1
wait
stamp "stand-in backbone"
scripts/make_demo_model.sh --until backbone --set runtime.device=cuda data.num_workers=8 2>&1 | tail -3

stamp "experiments"
timeout "${EXPERIMENT_LIMIT_S:-420}" python scripts/run_experiments.py --jobs 6 --threads 2 \
  --suites recipe,ablation,zoom,control --seeds 0,1,2 --use-recipe-winner \
  --set runtime.device=cuda data.num_workers=2 | grep -v '^|' | tee "$OUT/experiments.log"
python scripts/run_experiments.py --summarise-only >/dev/null

stamp "demo model with the chosen recipe"
mapfile -t recipe < <(python -c "import json; [print(o) for o in json.load(open('docs/results/recipe_selection.json'))[0]['winner_overrides']]" 2>/dev/null)
echo "recipe: ${recipe[*]:-paper}" | tee -a "$OUT/experiments.log"
timeout 120 scripts/make_demo_model.sh --until model --set runtime.device=cuda data.num_workers=8 "${recipe[@]}" 2>&1 | tail -3
[ -f runs/demo/checkpoints/last.pt ] && python -m flrdf export --checkpoint runs/demo --model-out "$OUT/demo_model.safetensors" &&
  (cd "$OUT" && split -b 15M demo_model.safetensors demo_model.part- && rm demo_model.safetensors)
stamp "packing"
tar czf "$OUT/results.tgz" docs/results/experiments.md docs/results/experiments.json docs/results/ablation.png \
  $(ls docs/results/recipe_selection.json 2>/dev/null) \
  $(find runs -maxdepth 2 \( -name status.json -o -name config.yaml -o -name metrics.jsonl -o -name log.txt -o -name 'eval_test.json' \))
stamp "done"
