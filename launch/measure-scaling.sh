#!/usr/bin/env bash
# The communication measurements of one machine, in one go (release build; root for the
# namespace hosts): the link between 2 hosts over TCP and on shared memory (ping-pong against
# allreduce), and `bench scaling` for ResNet-20 on 2 and 4 local ranks and on 2 hosts, and for
# ResNet-50 on 2 ranks. Run it on an otherwise idle machine.
#   launch/measure-scaling.sh [OUT_DIR]      (default runs/scaling-measurements)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
out=${1:-runs/scaling-measurements}
B=.build/release/sparsetrain
[ -x "$B" ] || launch/build.sh
mkdir -p "$out"
launch/run-hosts.sh -hosts 2 --bin "$B" -- bench allreduce --link --repeats 10 > "$out/link-tcp.txt"
launch/run-local.sh -np 2 --bin "$B" -- bench allreduce --link --repeats 10 > "$out/link-shm.txt"
for np in 2 4; do
  launch/run-local.sh -np "$np" --bin "$B" -- bench scaling --model resnet20 --batch 64 --densities 1 0.1 0.01 \
    --nodes 1 2 4 8 64 1024 --steps 5 > "$out/scaling-resnet20-shm-$np.txt"
done
launch/run-hosts.sh -hosts 2 --bin "$B" -- bench scaling --model resnet20 --batch 64 --densities 1 0.1 0.01 \
  --nodes 1 2 4 8 64 1024 --steps 5 > "$out/scaling-resnet20-tcp-2.txt"
launch/run-local.sh -np 2 --bin "$B" -- bench scaling --model resnet50-imagenet --batch 32 --densities 1 0.1 0.01 \
  --steps 3 --svg "$out/scaling-resnet50.svg" > "$out/scaling-resnet50-shm-2.txt"
echo "wrote $out"
