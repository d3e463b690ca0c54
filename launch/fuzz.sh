#!/usr/bin/env bash
# Fuzzes the parsers of files users hand us with libFuzzer: safetensors checkpoints, CIFAR
# binaries, the packed-shard index, YAML configs and JPEG decoding through the shim.
#
#   launch/fuzz.sh [--runs N] [--jobs J] [TARGET…]     (default: 1000000 runs, every target)
#
# Builds sparsetrain-fuzz with coverage instrumentation into .build-fuzz/, seeds a corpus per
# target (presets, a real checkpoint, CIFAR records, a packed index, JPEGs), runs each target and
# prints executions and crashes per target. Crash inputs land in .build-fuzz/crashes/TARGET/;
# replay one with `swift run sparsetrain-fuzz TARGET FILE` and turn it into a regression test.
# Exits 1 if any target crashed.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
runs=1000000
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    checkpoint|cifar|packed-index|yaml|jpeg) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (targets: checkpoint cifar packed-index yaml jpeg)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint cifar packed-index yaml jpeg)
ensure_system_packages
ensure_swift

out=.build-fuzz
echo "== building the fuzzer (release, --sanitize=fuzzer)"
swift build -c release --product sparsetrain-fuzz --sanitize=fuzzer -Xswiftc -DFUZZING --build-path "$out/build" 2>&1 | tail -n 1
fuzzer="$out/build/release/sparsetrain-fuzz"

seed_corpus() {
  local t=$1 dir=$out/corpus/$1
  mkdir -p "$dir"
  [ -n "$(ls -A "$dir")" ] && return 0
  case "$t" in
    yaml) cp launch/presets/*.yaml "$dir/" ;;
    jpeg)
      local n=0
      for f in ../shared/data/cifar10/test/*/*.jpg; do
        [ -e "$f" ] || break
        cp "$f" "$dir/$n.jpg"; n=$((n + 1)); [ $n -ge 8 ] && break
      done ;;
    cifar) head -c $((3073 * 2)) /dev/urandom > "$dir/two-records.bin" ;;
    packed-index)
      printf '{"format":"sparsetrain-packed-1","size":4,"count":1,"classes":["a"],"shards":[{"file":"shard-00000.bin","count":1,"checksum":"0"}]}' > "$dir/index.json" ;;
    checkpoint)
      swift build --product sparsetrain 2>&1 | tail -n 1
      local st
      st="$(swift build --show-bin-path)/sparsetrain"
      "$st" train --set model=mlp --set input=3x4x4 --set hidden=[8] --set synthetic_train=32 --set synthetic_test=16 \
        --set batch_size=16 --set epochs=1 --set sparsity=0.5 --output "$out/seed-run" --overwrite > /dev/null 2>&1
      cp "$out/seed-run/checkpoint.safetensors" "$dir/" ;;
  esac
}

printf '\n%-14s %12s %8s %10s\n' target executions crashes seconds
status=0
for t in "${targets[@]}"; do
  seed_corpus "$t"
  mkdir -p "$out/crashes/$t"
  log="$out/$t.log"
  start=$(date +%s)
  set +e
  parallel=()
  if [ "$jobs" -gt 1 ]; then parallel=(-fork="$jobs"); fi
  SWIFT_BACKTRACE=enable=no SPARSETRAIN_FUZZ_TARGET=$t "$fuzzer" "$out/corpus/$t" -runs="$runs" -max_len=65536 \
    -timeout=10 -rss_limit_mb=4096 "${parallel[@]}" -artifact_prefix="$out/crashes/$t/" \
    -print_final_stats=1 > "$log" 2>&1
  set -e
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  crashes=$(find "$out/crashes/$t" -type f | wc -l)
  printf '%-14s %12s %8s %10s\n' "$t" "$execs" "$crashes" "$(( $(date +%s) - start ))"
  [ "$crashes" -eq 0 ] || status=1
done
[ $status -eq 0 ] || echo "crash inputs are in $out/crashes/; replay: swift run sparsetrain-fuzz TARGET FILE"
exit $status
