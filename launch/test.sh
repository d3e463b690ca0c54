#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   1. unit tests (swift test, single process: MPI tests skip),
#   2. MPI integration tests under mpirun -np 2 (the same test binary),
#   3. the command line under mpirun -np 2 (bench allreduce, small).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
ensure_system_packages
ensure_swift
mpi_env
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "== build"
swift build --build-tests

echo "== unit tests (single process)"
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log/unit.txt" || true

echo "== MPI integration tests (mpirun -np 2)"
bin=$(swift build --show-bin-path)/sparsetrainPackageTests.xctest
suites=$("$bin" --list-tests | grep '^MPIIntegrationTests\.' | cut -d/ -f1 | sort -u | paste -sd, -)
[ -n "$suites" ] || { echo "error: no MPI integration tests found" >&2; exit 1; }
timeout 600 mpirun "${MPI_LOCAL_ARGS[@]}" -np 2 "$bin" "$suites" 2>&1 | tee "$log/mpi.txt" || true

echo "== command line under mpirun -np 2"
timeout 300 launch/run-local.sh -np 2 --bin "$(swift build --show-bin-path)/sparsetrain" -- \
  bench allreduce --params 300000 --density 1 0.1 --repeats 3 --warmup 1 --json | tee "$log/cli.txt" || true
"$(swift build --show-bin-path)/sparsetrain" bench step --model resnet20 --batch 8 --steps 1 --warmup 0 \
  --json | tee "$log/step.txt" || true
"$(swift build --show-bin-path)/sparsetrain" densities --model vgg16 --sparsity 0.9 --method balanced \
  --json | tee "$log/densities.txt" || true
cli_ok=0
grep -q '"ranks":2' "$log/cli.txt" && grep -q '"packed_bytes":1200000,' "$log/cli.txt" &&
  grep -q '"images_per_second"' "$log/step.txt" &&
  grep -q '"total_nnz":1471558,' "$log/densities.txt" && cli_ok=1

# One closing line for the whole run, from XCTest's bundle summaries
# ("Executed N tests, with S tests skipped and F failures"); MPI results count once per rank.
# A runner that crashed leaves no summary and counts as a failure.
summary() {
  grep -E "^Test Suite '(All tests|Selected tests)' (passed|failed)" -A1 "$1" | grep Executed |
    sed -E 's/.*Executed ([0-9]+) tests?, with (([0-9]+) tests? skipped and )?([0-9]+) failures?.*/\1 \3 \4/' |
    awk '{run+=$1; skip+=($2==""?0:$2); fail+=$3} END {print run-skip-fail, skip, fail, NR}'
}
read -r u_pass u_skip u_fail u_n <<<"$(summary "$log/unit.txt")"
read -r m_pass m_skip m_fail m_n <<<"$(summary "$log/mpi.txt")"
[ "$u_n" -eq 1 ] || { echo "error: unit test summary not found" >&2; u_fail=$((u_fail + 1)); }
[ "$m_n" -eq 2 ] || { echo "error: expected MPI test summaries from 2 ranks, found $m_n" >&2; m_fail=$((m_fail + 1)); }
passed=$((u_pass + m_pass + cli_ok))
failed=$((u_fail + m_fail + 1 - cli_ok))
echo "tests: $passed passed, $failed failed, $((u_skip + m_skip)) skipped"
[ "$failed" -eq 0 ]
