#!/usr/bin/env bash
# GPU checks in one run. Default (a few minutes on one H100/H200): the engine's GPU-only paths
# (issue 13) - AMP bf16 and fp16+GradScaler, channels_last, torch.compile, a 1-GPU torchrun run
# under NCCL through a full evaluation, and its --resume under torchrun - and (issue 22) a 2-rank
# DDP run whose ranks must agree (parameters and DDT statistics), FLRDF vs baseline throughput on
# ResNet-50 / 448 / bf16 / channels_last (ratios, ideal 1/3 and 1/2), and two epochs of the paper
# config at 448 px with the DDT map under fp16 autocast (nothing NaN) - written as ONE JSON,
# docs/results/gpu_check.json (each check: ok / error text / figures; a failure never stops the
# others). scripts/gpu_check.py lists them. `--device cpu --skip compile` (or `--tiny`) runs every
# check shrunk to CPU minutes as a test of the script; that JSON goes to $OUT/gpu_check/, never to docs/.
#
# BENCH=1 also runs every GPU measurement of docs/PERFORMANCE.md (about 6-8 minutes more): FLRDF vs
# baseline throughput at resnet18/224 and resnet50/448 (AMP + channels_last, data pipeline
# included), Inspect latency on CUDA, and a short paper-config training run on synthetic data at
# 448 px to time an epoch. Those results land in ${OUT:-gpu-results}/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt" || true
python scripts/gpu_check.py --out docs/results/gpu_check.json --work "$OUT/gpu_check" "$@"
check_rc=$?
[ "$check_rc" -eq 0 ] || echo "gpu_check: some checks failed - see the JSON named above" >&2
if [ "${BENCH:-0}" != "1" ]; then
  exit "$check_rc"
fi
set -e
python -m flrdf bench --device cuda --backbone resnet18 --size 224 --batch 64 --iters 10 --rounds 3 --pipeline \
  --pipeline-steps 20 --out "$OUT/bench_r18_224.json"
python -m flrdf bench --device cuda --backbone resnet50 --size 448 --batch 16 --iters 10 --rounds 3 --pipeline \
  --pipeline-steps 20 --out "$OUT/bench_r50_448.json"
python scripts/bench_inspect.py --device cuda --repeats 7 > "$OUT/inspect_cuda.json"
# paper recipe (ResNet-50, 448 px, batch 16, AMP) on 800 synthetic images at 512 px: epoch time
python -m flrdf make-demo-data --out "$OUT/synthetic" --classes 10 --train-per-class 80 --test-per-class 10 --size 512
python -m flrdf train --config cub --out "$OUT/paper-epoch" --set data.root="$OUT/synthetic" \
  --set model.pretrained=false --set optim.epochs=2 --set data.num_workers=8 --set runtime.log_every=10
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
lines = [json.loads(l) for l in (out / "paper-epoch" / "metrics.jsonl").read_text().splitlines()]
ips = [l["images_per_s"] for l in lines if l.get("images_per_s")][2:]
print(json.dumps({"paper_config_train_images_per_s_median": sorted(ips)[len(ips) // 2] if ips else None}))
PY
exit "$check_rc"
