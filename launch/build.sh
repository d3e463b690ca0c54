#!/usr/bin/env bash
# Builds the release binary, tuned for this CPU (AVX-512 where present).
#   launch/build.sh            -> .build/release/sparsetrain
#   SPARSETRAIN_PORTABLE=1 launch/build.sh   baseline x86-64 (for clusters with mixed CPUs)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
ensure_swift
flags=()
if [ "${SPARSETRAIN_PORTABLE:-0}" != 1 ]; then
  flags=(-Xswiftc -target-cpu -Xswiftc native -Xcc -march=native)
fi
swift build -c release --product sparsetrain "${flags[@]}"
echo "built $(pwd)/.build/release/sparsetrain" >&2
