#!/usr/bin/env bash
# How fast a job ends when something goes wrong, on 2 local ranks and on 2 namespace hosts
# (TCP): kill -9 of rank 0 and of rank 1 (a crash or a lost node), SIGSTOP of rank 1 (a hang;
# watchdog_seconds W), SIGTERM to the launcher (what Slurm and Ctrl-C send: all ranks agree on a
# stop step and write a checkpoint). One row per event: seconds from the signal to the end of
# the job, the exit code, and the job's last line. Root for the namespace hosts.
#   launch/measure-failures.sh [--bin PATH] [--watchdog W]      (defaults: release build, 5 s)
set -uo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
bin=.build/release/sparsetrain
watchdog=5
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --watchdog) watchdog="$2"; shift 2 ;;
    *) echo "measure-failures.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || launch/build.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
net=(--set model=mlp --set input=3x8x8 --set hidden=[64,32] --set batch_size=64 --set synthetic_train=16384
     --set synthetic_test=64 --set sparsity=0.7 --set epochs=1000 --set algorithm=rigl --set rigl_update_every=10
     --set final_sparsity=0.85 --set log_every=1000 --set watchdog_seconds="$watchdog")
launchers=(local)
[ "$(id -u)" = 0 ] && command -v ip >/dev/null && launchers+=(hosts)

printf '%-6s %-22s %8s %5s  %s\n' where event seconds exit "last line"
for where in "${launchers[@]}"; do
  for event in kill-9-rank-0 kill-9-rank-1 sigstop-rank-1 sigterm-launcher; do
    dir="$tmp/$where-$event"
    if [ "$where" = local ]; then
      launch/run-local.sh -np 2 --bin "$bin" -- train "${net[@]}" --output "$dir" > "$dir.log" 2>&1 &
    else
      launch/run-hosts.sh -hosts 2 --bin "$bin" -- train "${net[@]}" --output "$dir" > "$dir.log" 2>&1 &
    fi
    launcher=$!
    for _ in $(seq 1 600); do [ -f "$dir/checkpoint.safetensors" ] && break; sleep 0.05; done
    sleep 1
    t0=$(date +%s.%N)
    case "$event" in
      kill-9-rank-*) kill -KILL "$(rank_pid "sparsetrain train .*$dir" "${event##*-}")" ;;
      sigstop-rank-1) kill -STOP "$(rank_pid "sparsetrain train .*$dir" 1)" ;;
      sigterm-launcher) kill -TERM "$launcher" ;;
    esac
    rc=0
    wait "$launcher" || rc=$?
    t1=$(date +%s.%N)
    last=$(grep -a -v '^\s*$' "$dir.log" | tail -n 1 | cut -c1-110)
    printf '%-6s %-22s %8.2f %5s  %s\n' "$where" "$event" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$rc" "$last"
  done
done
echo "kill -9: mpirun notices the lost process and ends the others; SIGSTOP: the other rank's watchdog (watchdog_seconds $watchdog, or 20 median steps if longer) ends the job; SIGTERM: exit 3 after the agreed step's checkpoint"
