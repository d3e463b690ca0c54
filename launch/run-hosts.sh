#!/usr/bin/env bash
# "A cluster" on one machine: H hosts made of Linux network namespaces, each with its own network
# stack, address and hostname, joined by a bridge, and sparsetrain run across them by mpirun over
# real TCP (the settings of cluster-configs/). Everything it creates is removed on exit, also on
# failure or Ctrl-C. Needs root (network namespaces) and iproute2.
#   launch/run-hosts.sh [-hosts H] [-np N] [--threads T] [--mtu M] [--bin PATH] -- <sparsetrain arguments>
# -hosts H    hosts (default 2, at most 8)
# -np N       ranks, spread evenly over the hosts (default: one per host)
# --threads T OpenBLAS threads per rank (default: cores / ranks, at least 1)
# --mtu M     MTU of the virtual links (default 65000: jumbo frames; at 1500 each byte costs the
#             host's CPUs more and large messages move at half the rate)
# --bin PATH  the sparsetrain binary (default: .build/release/sparsetrain, built if missing)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
here=$(repo_root)
hosts=2
np=""
threads=""
mtu=65000
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    -hosts|--hosts) hosts="$2"; shift 2 ;;
    -np|--np) np="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --mtu) mtu="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-hosts.sh: unknown option '$1' (put sparsetrain's arguments after --)" >&2; exit 2 ;;
  esac
done
[[ "$hosts" =~ ^[1-8]$ ]] || { echo "run-hosts.sh: -hosts must be 1 to 8, got '$hosts'" >&2; exit 2; }
np=${np:-$hosts}
[[ "$np" =~ ^[1-9][0-9]*$ ]] && [ $((np % hosts)) -eq 0 ] || {
  echo "run-hosts.sh: -np must be a positive multiple of the $hosts hosts, got '$np'" >&2; exit 2; }
[[ "$mtu" =~ ^[0-9]+$ ]] && [ "$mtu" -ge 1280 ] && [ "$mtu" -le 65535 ] || {
  echo "run-hosts.sh: --mtu must be 1280 to 65535, got '$mtu'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run-hosts.sh: network namespaces need root" >&2; exit 2; }
command -v ip >/dev/null || { echo "run-hosts.sh: 'ip' not found (apt-get install iproute2)" >&2; exit 2; }
cores=$(nproc)
if [ -z "$threads" ]; then threads=$(( cores / np )); [ "$threads" -ge 1 ] || threads=1; fi
if [ -z "$bin" ]; then
  bin="$here/.build/release/sparsetrain"
  [ -x "$bin" ] || { echo "run-hosts.sh: building release binary" >&2; "$here/launch/build.sh" >&2; }
fi
[ -x "$bin" ] || { echo "run-hosts.sh: no executable at $bin" >&2; exit 2; }

# Names and a private /24 of our own, both derived from this process so runs do not collide.
tag="st$(( $$ % 100000 ))"
net="10.213.$(( $$ % 250 + 1 ))"
bridge="${tag}br"
agent=$(mktemp /tmp/run-hosts-agent.XXXXXX)
cleanup() {
  for i in $(seq 1 "$hosts"); do ip netns del "${tag}h$i" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  rm -f "$agent"
}
trap cleanup EXIT

ip link add "$bridge" type bridge
ip link set "$bridge" mtu "$mtu" up
host_list=()
for i in $(seq 1 "$hosts"); do
  ns="${tag}h$i"
  ip netns add "$ns"
  ip link add "${tag}v$i" mtu "$mtu" type veth peer name "${tag}p$i" mtu "$mtu"
  ip link set "${tag}p$i" netns "$ns"
  ip link set "${tag}v$i" master "$bridge" up
  ip -n "$ns" addr add "$net.$i/24" dev "${tag}p$i"
  ip -n "$ns" link set "${tag}p$i" up
  ip -n "$ns" link set lo up
  host_list+=("$net.$i:$((np / hosts))")
done

# mpirun starts its daemon on another host as `AGENT HOST COMMAND…`, a command line for a remote
# shell (as ssh would run it): enter that host's namespace, give it its hostname, run it there.
cat > "$agent" <<EOF
#!/bin/sh
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
i=\${host##*.}
exec ip netns exec "${tag}h\$i" unshare -u sh -c 'hostname "host\$0"; exec sh -c "\$1"' "\$i" "\$*"
EOF
chmod +x "$agent"

mpi_env
export OPENBLAS_NUM_THREADS="$threads"
args=("${MPI_LOCAL_ARGS[@]}" -x OPENBLAS_NUM_THREADS --bind-to none
      --host "$(IFS=,; echo "${host_list[*]}")" --mca plm_rsh_agent "$agent"
      --mca btl tcp,vader,self --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24")
echo "run-hosts.sh: $hosts hosts (${host_list[*]}), $np ranks over TCP" >&2
# mpirun itself runs on host 1 (its own namespace and hostname) and reaches the others by TCP.
MPIRUN_PREFIX=(ip netns exec "${tag}h1" unshare -u sh -c 'hostname host1; exec "$@"' sh)
run_mpirun "${args[@]}" -np "$np" "$bin" "$@"
