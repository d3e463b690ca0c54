#!/usr/bin/env bash
# The communication measurements of one machine, in one go (release build; root for the
# namespace hosts). Run it on an otherwise idle machine; ~25 minutes on 2 cores.
#   launch/measure-scaling.sh [OUT_DIR]      (default runs/scaling-measurements)
# - link-*.txt: ping-pong, both-ways exchange and allreduce between 2 hosts over TCP (virtual
#   links at MTU 65000 and at 1500) and on shared memory;
# - scaling-resnet20-*.txt: `bench scaling` predicted against measured steps on 2 and 4 local
#   ranks and on 2 and 4 hosts (15 steps per density);
# - scaling-resnet50-*.txt: ResNet-50 / ImageNet on 2 local ranks (fabric measured here) and its
#   1…1,024-node predictions on the 25 GbE and InfiniBand EDR presets;
# - exposed-*.txt: density 1 over 2 hosts with and without the communication thread.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
out=${1:-runs/scaling-measurements}
B=.build/release/sparsetrain
[ -x "$B" ] || launch/build.sh
mkdir -p "$out"
launch/run-hosts.sh -hosts 2 --bin "$B" -- bench allreduce --link --repeats 10 > "$out/link-tcp.txt"
launch/run-hosts.sh -hosts 2 --mtu 1500 --bin "$B" -- bench allreduce --link --repeats 10 > "$out/link-tcp-mtu1500.txt"
launch/run-local.sh -np 2 --bin "$B" -- bench allreduce --link --repeats 10 > "$out/link-shm.txt"
r20=(bench scaling --model resnet20 --batch 64 --densities 1 0.1 0.01 --nodes 1 2 4 8 64 256 1024 --steps 15)
for np in 2 4; do
  launch/run-local.sh -np "$np" --bin "$B" -- "${r20[@]}" > "$out/scaling-resnet20-shm-$np.txt"
  launch/run-hosts.sh -hosts "$np" --bin "$B" -- "${r20[@]}" > "$out/scaling-resnet20-tcp-$np.txt"
done
r50=(bench scaling --model resnet50-imagenet --batch 32 --densities 1 0.1 0.01 --nodes 1 2 4 8 64 256 1024 --steps 5)
launch/run-local.sh -np 2 --bin "$B" -- "${r50[@]}" --svg "$out/scaling-resnet50.svg" > "$out/scaling-resnet50-shm-2.txt"
for fabric in 25gbe ib-edr; do
  "$B" "${r50[@]}" --fabric "$fabric" --svg "$out/scaling-resnet50-$fabric.svg" > "$out/scaling-resnet50-$fabric.txt"
done
for thread in off on; do
  launch/run-hosts.sh -hosts 2 --threads 1 --bin "$B" -- bench scaling --model vgg16 --batch 32 --densities 1 --nodes 2 \
    --steps 10 --comm-thread "$thread" > "$out/exposed-vgg16-tcp-thread-$thread.txt"
  launch/run-hosts.sh -hosts 2 --threads 1 --bin "$B" -- bench scaling --model resnet50-imagenet --batch 16 --densities 1 --nodes 2 \
    --steps 5 --comm-thread "$thread" > "$out/exposed-resnet50-tcp-thread-$thread.txt"
done
echo "wrote $out"
