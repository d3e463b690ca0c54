#!/usr/bin/env bash
# Runs sparsetrain on this machine with N MPI ranks, with the settings these machines need:
#   launch/run-local.sh [-np N] [--threads T] [--bin PATH] -- <sparsetrain arguments>
# -np N       ranks (default 2)
# --threads T OpenBLAS threads per rank (default: cores / ranks, at least 1)
# --bin PATH  the sparsetrain binary (default: .build/release/sparsetrain, built if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
np=2
threads=""
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    -np|--np) np="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-local.sh: unknown option '$1' (put sparsetrain's arguments after --)" >&2; exit 2 ;;
  esac
done
[[ "$np" =~ ^[1-9][0-9]*$ ]] || { echo "run-local.sh: -np must be a positive integer, got '$np'" >&2; exit 2; }
cores=$(nproc)
if [ -z "$threads" ]; then threads=$(( cores / np )); [ "$threads" -ge 1 ] || threads=1; fi
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "run-local.sh: --threads must be a positive integer" >&2; exit 2; }
if [ -z "$bin" ]; then
  bin="$here/.build/release/sparsetrain"
  if [ ! -x "$bin" ]; then
    echo "run-local.sh: building release binary" >&2
    (cd "$here" && swift build -c release --product sparsetrain >&2)
  fi
fi
[ -x "$bin" ] || { echo "run-local.sh: no executable at $bin" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "run-local.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }

# Shared-memory transport without single-copy (CMA is blocked in containers) and a malloc that
# keeps large buffers mapped: 2-3x faster large allreduces on these machines (DESIGN.md §6).
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296
export OPENBLAS_NUM_THREADS="$threads"
args=(--oversubscribe --mca btl_vader_single_copy_mechanism none
      -x MALLOC_MMAP_MAX_ -x MALLOC_TRIM_THRESHOLD_ -x OPENBLAS_NUM_THREADS)
for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  [ -n "${!v:-}" ] && args+=(-x "$v")
done
if [ "$(id -u)" = 0 ]; then args+=(--allow-run-as-root); fi
# One core per rank when each rank runs one BLAS thread; otherwise let threads float.
if [ "$threads" -gt 1 ] || [ "$np" -gt "$cores" ]; then args+=(--bind-to none); else args+=(--bind-to core); fi
exec mpirun "${args[@]}" -np "$np" "$bin" "$@"
