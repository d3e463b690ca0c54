#!/usr/bin/env bash
# Installs what is missing, builds the release binary, and runs the main job: a short
# sparse-to-sparse training run (ResNet-20, random ER mask at sparsity 0.9, balanced densities)
# on built-in synthetic data with 2 MPI ranks. Extra arguments go to `sparsetrain train`.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
ensure_system_packages
ensure_swift
launch/build.sh
exec launch/run-local.sh -np 2 -- train --config launch/presets/quickstart.yaml --overwrite "$@"
