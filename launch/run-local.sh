#!/usr/bin/env bash
# Runs sparsetrain on this machine with N MPI ranks, with the settings these machines need:
#   launch/run-local.sh [-np N] [--threads T] [--bin PATH] -- <sparsetrain arguments>
# -np N       ranks (default 2)
# --threads T OpenBLAS threads per rank (default: cores / ranks, at least 1)
# --bin PATH  the sparsetrain binary (default: .build/release/sparsetrain, built if missing)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
here=$(repo_root)
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
    "$here/launch/build.sh" >&2
  fi
fi
[ -x "$bin" ] || { echo "run-local.sh: no executable at $bin" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "run-local.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }

mpi_env
export OPENBLAS_NUM_THREADS="$threads"
args=("${MPI_LOCAL_ARGS[@]}" -x OPENBLAS_NUM_THREADS)
for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  if [ -n "${!v:-}" ]; then args+=(-x "$v"); fi
done
# One core per rank when each rank runs one BLAS thread; otherwise let threads float.
if [ "$threads" -gt 1 ] || [ "$np" -gt "$cores" ]; then args+=(--bind-to none); else args+=(--bind-to core); fi
run_mpirun "${args[@]}" -np "$np" "$bin" "$@"
