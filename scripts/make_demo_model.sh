#!/usr/bin/env bash
# Rebuild the bundled demo model (assets/demo_model.safetensors) and examples from scratch.
# About 25 minutes on a 2-core CPU. OMP_NUM_THREADS=1 keeps torch from oversubscribing a busy machine;
# drop it on an idle one.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1. the synthetic fine-grained set (train 150 / test 40 per class, 10 classes)
python -m flrdf make-demo-data --out data/demo --train-per-class 150 --test-per-class 40 --seed 0
# 2. the ImageNet stand-in: object crops of a disjoint synthetic set (seed 1000) -> plain ResNet-18
python -m flrdf make-demo-data --out data/pretrain --train-per-class 150 --test-per-class 20 --seed 1000
python scripts/make_crop_set.py --root data/pretrain --out data/pretrain-crops --size 72
python -m flrdf train --config demo-pretrain --out runs/demo-pretrain
python -m flrdf export --checkpoint runs/demo-pretrain --backbone-out data/demo-backbone.pth
# 3. FLRDF itself, weakly supervised (image labels only) on the demo set
python -m flrdf train --config demo --out runs/demo
python -m flrdf eval --run runs/demo --out runs/demo/eval_test.json
# 4. the bundled files
python -m flrdf export --checkpoint runs/demo --model-out assets/demo_model.safetensors
python scripts/make_examples.py --root data/demo --out assets/examples --count 12
