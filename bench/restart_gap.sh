#!/usr/bin/env bash
# bench/restart_gap.sh — how long traffic stops while a weftnet node restarts.
#
# What it measures
#   Two gossip nodes (network namespaces on one veth, --range 10.209.0.0/16). From
#   node A, `ping -i 0.01` (100 per second) runs to node B's overlay address while one
#   node is restarted as systemd or the kubelet would: SIGTERM, wait for the exit,
#   start again with the same command. The gap is the longest run of unanswered
#   sequence numbers times 10 ms. Each round restarts B (the far end), then A (the
#   near end); ROUNDS rounds.
#
# How to run (as root; needs ip netns, /dev/net/tun, ping):
#   bash bench/restart_gap.sh            # ROUNDS=5
#
# Environment
#   ROUNDS       restarts of each end (default 5)
#   WEFTNET_BIN  weftnet binary (default target/release/weftnet in the repo; built
#                with `cargo build --release` if that default is missing)
#   KEEP_WORKDIR=1  keep the temp dir with the daemon and ping logs
#
# Traffic only goes to addresses inside the two namespaces this script creates;
# everything (namespaces, processes, the persistent interfaces) is removed on exit.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DEFAULT_WEFTNET_BIN="$REPO_ROOT/target/release/weftnet"
WEFTNET_BIN=${WEFTNET_BIN:-$DEFAULT_WEFTNET_BIN}
RANGE=10.209.0.0/16
NS_A="wrA-$$"
NS_B="wrB-$$"
UNDER_A=10.208.0.1
UNDER_B=10.208.0.2
WORK=$(mktemp -d /tmp/weftnet-restart-gap.XXXXXX)
declare -A PID

log() { printf '[restart-gap %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
    for side in A B; do
        [[ -n ${PID[$side]:-} ]] && kill -INT "${PID[$side]}" 2>/dev/null || true
    done
    sleep 0.5
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [[ $WEFTNET_BIN == "$DEFAULT_WEFTNET_BIN" && ! -x $WEFTNET_BIN ]]; then
    (cd "$REPO_ROOT" && cargo build --release)
fi
log "binary: $WEFTNET_BIN"

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add wrvA$$ netns "$NS_A" type veth peer name wrvB$$ netns "$NS_B"
ip -n "$NS_A" addr add $UNDER_A/24 dev wrvA$$
ip -n "$NS_B" addr add $UNDER_B/24 dev wrvB$$
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set wrvA$$ up
ip -n "$NS_B" link set wrvB$$ up
mkdir -p "$WORK/A" "$WORK/B"
"$WEFTNET_BIN" gensecret --output "$WORK/secret" >/dev/null

ns_of() { [[ $1 == A ]] && echo "$NS_A" || echo "$NS_B"; }

start() {
    local side=$1 join=()
    [[ $side == B ]] && join=(--join $UNDER_A:51820)
    ip netns exec "$(ns_of "$side")" "$WEFTNET_BIN" up --state-dir "$WORK/$side" \
        --secret-file "$WORK/secret" --range $RANGE --name "$side" "${join[@]}" \
        >>"$WORK/$side.log" 2>&1 &
    PID[$side]=$!
    for _ in $(seq 100); do
        ip netns exec "$(ns_of "$side")" "$WEFTNET_BIN" status --state-dir "$WORK/$side" \
            >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "node $side did not start"; cat "$WORK/$side.log" >&2; exit 1
}

restart() {
    local side=$1
    kill -TERM "${PID[$side]}"
    wait "${PID[$side]}" || { log "node $side exited non-zero on SIGTERM"; exit 1; }
    start "$side"
}

block_of() {
    ip netns exec "$(ns_of "$1")" "$WEFTNET_BIN" status --json --state-dir "$WORK/$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["block"] or "")'
}

start A
start B
B_ADDR=""
for _ in $(seq 100); do
    b=$(block_of B)
    if [[ -n $b ]]; then B_ADDR=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_network('$b')[1])"); break; fi
    sleep 0.1
done
[[ -n $B_ADDR ]] || { log "node B claimed no block"; exit 1; }
ip netns exec "$NS_A" ping -c 1 -W 5 "$B_ADDR" >/dev/null || { log "no ping before the restarts"; exit 1; }

gaps=()
for round in $(seq "$ROUNDS"); do
    for side in B A; do
        out="$WORK/ping-$round-$side.txt"
        ip netns exec "$NS_A" ping -n -i 0.01 -W 1 "$B_ADDR" >"$out" 2>&1 &
        ping_pid=$!
        sleep 1
        restart "$side"
        sleep 2
        kill -INT $ping_pid; wait $ping_pid || true
        gap=$(python3 - "$out" <<'EOF'
import re, sys
seqs = [int(m.group(1)) for m in re.finditer(r"icmp_seq=(\d+)", open(sys.argv[1]).read())]
print(max((b - a - 1 for a, b in zip(seqs, seqs[1:])), default=-1) * 10)
EOF
)
        log "round $round: $side restarted, gap $gap ms"
        gaps+=("$gap")
    done
done
python3 - "${gaps[@]}" <<'EOF'
import statistics, sys
g = sorted(int(x) for x in sys.argv[1:])
print(f"restart gap over {len(g)} restarts (ping every 10 ms): median {statistics.median(g):.0f} ms, min {g[0]} ms, max {g[-1]} ms")
EOF
