#!/usr/bin/env bash
# Runs the benchmark set and prints their tables:
#   launch/bench.sh [--pytorch PYTHON]
# - training step of ResNet-20 and VGG16-BN (batch 128, all cores; with --pytorch, PyTorch is
#   timed in the same run, 3 rounds interleaved with this engine's, for the ratio),
# - 3×3 convolutions: direct kernel vs im2col + sgemm, per layer shape,
# - packed masked gradient allreduce on 2 ranks (ResNet-50-sized buffer),
# - data pipeline (CIFAR-10 JPEG from ../shared/data when present, else synthetic).
# Timings are only comparable within one run on one machine.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
python=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pytorch) python="$2"; shift 2 ;;
    *) echo "bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
launch/build.sh >&2
bin=.build/release/sparsetrain
torch=()
[ -n "$python" ] && torch=(--pytorch "$python" --rounds 3)
echo "## training step"
"$bin" bench step --model resnet20 "${torch[@]}"
"$bin" bench step --model vgg16 --steps 3 --warmup 1 "${torch[@]}"
echo "## 3x3 convolutions"
"$bin" bench conv
"$bin" bench kernels
for s in 0.9 0.99; do
  "$bin" bench step --model vgg16 --sparsity "$s" --method erk --steps 3 --warmup 1 "${torch[@]}"
done
for s in 0 0.9 0.99; do
  "$bin" bench step --model mlp --hidden 4096 4096 4096 --sparsity "$s" --method uniform --steps 5 "${torch[@]}"
done
echo "## gradient allreduce, 2 ranks"
launch/run-local.sh -np 2 --bin "$bin" -- bench allreduce
echo "## data pipeline"
if [ -d ../shared/data/cifar10/train ]; then
  "$bin" bench data --dataset cifar10 --path ../shared/data/cifar10/train
else
  "$bin" bench data --dataset synthetic
fi
