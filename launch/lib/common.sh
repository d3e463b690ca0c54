# Shared helpers for the launch scripts. Source it; do not run it.

# Root of the repository.
repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# Installs the Debian packages sparsetrain needs when any is missing.
ensure_system_packages() {
  local pkgs=(pkg-config libopenmpi-dev openmpi-bin libopenblas-dev libjpeg62-turbo-dev)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing system packages: ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo=sudo
  fi
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2
}

# ensure_tool COMMAND PACKAGE: prints the path of COMMAND, installing Debian's PACKAGE first if
# it is missing; fails (with the reason on stderr) where it cannot be installed. For tools only
# the tests use (chromium, cjpeg).
ensure_tool() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && { command -v "$cmd"; return 0; }
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install $pkg" >&2; return 1; }
    sudo=sudo
  fi
  { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$pkg" >/dev/null 2>&1; }; } ||
    { echo "apt-get install $pkg failed" >&2; return 1; }
  command -v "$cmd"
}

# Fails with a clear message when the Swift toolchain is absent.
ensure_swift() {
  command -v swift >/dev/null && return 0
  [ -x /opt/swift/usr/bin/swift ] && { export PATH="/opt/swift/usr/bin:$PATH"; return 0; }
  echo "error: Swift 6 toolchain not found: install it from swift.org and put 'swift' on PATH" >&2
  return 1
}

# mpirun settings these machines need (DESIGN.md §6): as root, oversubscription, shared memory
# without single-copy (blocked in containers), and a malloc that keeps large buffers mapped.
mpi_env() {
  export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296
  if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
}
MPIRUN_PREFIX=()
MPI_LOCAL_ARGS=(--oversubscribe --mca btl_vader_single_copy_mechanism none
                -x MALLOC_MMAP_MAX_ -x MALLOC_TRIM_THRESHOLD_)

# Runs `mpirun ARGS…` (behind the command in the array MPIRUN_PREFIX, if set) and exits with
# its status. mpirun follows a failed rank with a dozen lines of its own: the program's one-line
# error (or stop notice; the first one if several ranks print one) is repeated last so it stays in view. The first SIGTERM or SIGINT is passed to the ranks
# as SIGUSR1 (mpirun forwards it): sparsetrain then stops at a step all ranks agree on, writes its
# checkpoint and exits with code 3. A second one stops mpirun at once.
run_mpirun() {
  local errlog outlog pid rc=0 last signals=0 lost progress
  errlog=$(mktemp)
  outlog=$(mktemp)
  "${MPIRUN_PREFIX[@]}" mpirun "$@" > >(tee "$outlog") 2> >(tee "$errlog" >&2) &
  pid=$!
  # (The background command execs down to mpirun, so $pid is mpirun's.)
  trap 'signals=$((signals + 1)); if [ $signals -eq 1 ]; then kill -USR1 "$pid"; else kill -TERM "$pid"; fi 2>/dev/null' TERM INT
  wait "$pid" || rc=$?
  # A signal interrupts `wait`: wait again for mpirun to finish stopping the ranks.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || rc=$?; done
  if [ "$rc" -ne 0 ]; then
    sleep 0.2
    # The first one: the cause (a rank stopped from outside may wake to report its own stale view).
    last=$(grep -a -E '^(error: |stopped on request )' "$errlog" | head -n 1 || true)
    # A rank that died without a word (kill -9, a crash, a lost node): name it, its host and
    # signal from mpirun's report, and the last step the job reported.
    lost=$(grep -a -o -E 'process rank [0-9]+ with PID [0-9]+ on node [^ ]+ exited on signal [0-9]+( \([A-Za-z ]+\))?' "$errlog" | head -n 1 || true)
    if [ -z "$last" ] && [ -n "$lost" ]; then
      progress=$(grep -a -o -E '^epoch [0-9]+(/[0-9]+ step [0-9]+/[0-9]+|:)' "$outlog" | tail -n 1 | tr -d ':' || true)
      last=$(echo "$lost" | sed -E 's/process rank ([0-9]+) with PID [0-9]+ on node ([^ ]+) exited on signal ([0-9]+)(.*)/error: rank \1 (host \2) ended on signal \3\4/')
      last="$last${progress:+ at $progress}; the job ended (its last checkpoint continues with train --resume)"
    fi
    if [ -n "$last" ]; then echo "$last" >&2; fi
  fi
  rm -f "$errlog" "$outlog"
  exit "$rc"
}

# rank_pid PATTERN RANK: the pid of the MPI rank RANK (from its OMPI_COMM_WORLD_RANK) among the
# processes whose command line matches PATTERN; empty if none.
rank_pid() {
  local pid
  for pid in $(pgrep -f "$1"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$pid"; return 0
    fi
  done
}
