#!/usr/bin/env bash
# Installs what is missing, builds the release binary, and runs the main job on 2 MPI ranks.
# For now the main job is the packed masked gradient allreduce benchmark (ResNet-50-sized buffer,
# densities 1, 0.1, 0.01); training takes its place once `sparsetrain train` exists.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
ensure_system_packages
ensure_swift
launch/build.sh
exec launch/run-local.sh -np 2 -- bench allreduce "$@"
