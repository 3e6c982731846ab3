#!/usr/bin/env bash
# Multicast fan-out benchmark for weftnet (run as root).
#
# Builds a gossip mesh of 4 nodes in network namespaces (one bridge in a "switch" namespace),
# then, with iperf 2, sends UDP multicast (TTL 1, group 239.1.1.1 on weft0) from node 1 at a
# fixed offered rate to receivers on 1, 2 and 3 other nodes, and unicast UDP to one node at the
# same offered rate for comparison. Prints delivered datagrams/s and loss per receiver.
#
# Usage: bench/multicast.sh [RATE (iperf -b, default 200M)] [SECONDS (default 5)] [LEN (default 1400)]
# Needs: ip, iperf (2), target/release/weftnet (built if missing).
set -euo pipefail

RATE=${1:-200M}
SECS=${2:-5}
LEN=${3:-1372}
GROUP=239.1.1.1
PORT=5001
N=4
RANGE=10.47.0.0/16

cd "$(dirname "$0")/.."
BIN=$PWD/target/release/weftnet
[ -x "$BIN" ] || cargo build --release --bin weftnet

ID="wmb$$"
TMP=$(mktemp -d "/tmp/$ID.XXXXXX")
PIDS=()

cleanup() {
    trap - EXIT INT TERM HUP PIPE
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for i in $(seq 1 $N); do ip netns del "$ID-h$i" 2>/dev/null; done
    ip netns del "$ID-sw" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP PIPE

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Underlay: hosts h1..hN on one bridge, 10.99.0.i/24.
ip netns add "$ID-sw"
nsx "$ID-sw" ip link add br0 type bridge stp_state 0 forward_delay 0
nsx "$ID-sw" ip link set br0 up
for i in $(seq 1 $N); do
    ns="$ID-h$i"
    ip netns add "$ns"
    nsx "$ID-sw" ip link add "p$i" type veth peer name eth0 netns "$ns"
    nsx "$ID-sw" ip link set "p$i" master br0 up
    nsx "$ns" ip addr add "10.99.0.$i/24" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip link set lo up
done

"$BIN" gensecret -o "$TMP/secret" >/dev/null
for i in $(seq 1 $N); do
    ns="$ID-h$i"
    mkdir -p "$TMP/n$i"
    : >"$TMP/n$i/weftnet.toml"
    join=()
    [ "$i" -gt 1 ] && join=(--join 10.99.0.1:51820)
    nsx "$ns" env -u WEFTNET_LOG "$BIN" up --config "$TMP/n$i/weftnet.toml" --state-dir "$TMP/n$i" \
        --name "n$i" --secret-file "$TMP/secret" --range "$RANGE" --log warn "${join[@]}" \
        >"$TMP/n$i/log" 2>&1 &
    PIDS+=($!)
done

status() { nsx "$ID-h$1" "$BIN" status --state-dir "$TMP/n$1" --json 2>/dev/null; }

# Wait (<= 30 s) for every node to have a block and see the others alive.
deadline=$((SECONDS + 30))
for i in $(seq 1 $N); do
    until status "$i" | python3 -c '
import json, sys
s = json.load(sys.stdin); c = s.get("cluster") or {}
ok = c.get("block") and sum(m.get("state") == "alive" for m in c.get("members", [])) == int(sys.argv[1])
sys.exit(0 if ok else 1)' $((N - 1)) 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "mesh did not converge"; cat "$TMP"/n*/log; exit 1; }
        sleep 0.2
    done
done
addr() { status "$1" | python3 -c 'import json,sys,ipaddress; b=json.load(sys.stdin)["cluster"]["block"]; print(ipaddress.ip_network(b)[1])'; }
declare -A ADDR
for i in $(seq 1 $N); do ADDR[$i]=$(addr "$i"); done

# Wait until node 1 lists GROUP for the members named in $@.
wait_groups() {
    local deadline=$((SECONDS + 15))
    until status 1 | python3 -c '
import json, sys
s = json.load(sys.stdin)
want = set(sys.argv[2:])
have = {m.get("name") for m in s["cluster"]["members"] if sys.argv[1] in (m.get("groups") or [])}
sys.exit(0 if want <= have else 1)' "$GROUP" "$@" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "groups not gossiped to n1"; status 1; exit 1; }
        sleep 0.2
    done
}

# Parse an iperf 2 server log: "<datagrams received> <datagrams sent> <loss %>" of the last report.
parse_server() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.findall(r"(\d+)/\s*(\d+)\s+\(([\d.e+-]+)%\)", text)
if not m:
    print("n/a n/a n/a"); sys.exit()  # no final report (the client's FIN datagrams were lost)
lost, total, pct = m[-1]
print(int(total) - int(lost), total, pct)
PY
}

# "<tx_packets> <tx_copies>" of GROUP on node 1, and the packets the kernel sent into its weft0.
sender_counters() {
    status 1 | python3 -c '
import json, sys
s = json.load(sys.stdin)
g = [g for g in s["multicast"]["groups"] if g["group"] == sys.argv[1]]
print(g[0]["tx_packets"], g[0]["tx_copies"]) if g else print(0, 0)' "$GROUP"
    nsx "$ID-h1" cat /sys/class/net/weft0/statistics/tx_packets
}

# Packets weftnet wrote into node $1's weft0 (the TUN's rx counter): multicast copies
# delivered by the daemon (or unicast packets), whether or not the application kept up.
rx_packets() { nsx "$ID-h$1" cat /sys/class/net/weft0/statistics/rx_packets; }

RESULTS=()
SENDER=()
run_case() { # label receivers... (node numbers); multicast unless label is "unicast"
    local label=$1; shift
    local srv=() logs=()
    for r in "$@"; do
        local log="$TMP/iperf-$label-$r.log"
        if [ "$label" = unicast ]; then
            nsx "$ID-h$r" iperf -s -u -B "${ADDR[$r]}" -p $PORT -l "$LEN" >"$log" 2>&1 &
        else
            nsx "$ID-h$r" iperf -s -u -B "$GROUP%weft0" -p $PORT -l "$LEN" >"$log" 2>&1 &
        fi
        srv+=($!); PIDS+=($!); logs+=("$log")
    done
    local before rxb=()
    read -r -a before <<<"$(sender_counters | tr '\n' ' ')"
    for r in "$@"; do rxb+=("$(rx_packets "$r")"); done
    if [ "$label" = unicast ]; then
        sleep 0.5
        nsx "$ID-h1" iperf -c "${ADDR[$1]}" -u -p $PORT -b "$RATE" -l "$LEN" -t "$SECS" >"$TMP/client-$label.log" 2>&1 || true
    else
        local names=(); for r in "$@"; do names+=("n$r"); done
        wait_groups "${names[@]}"
        nsx "$ID-h1" iperf -c "$GROUP" -u -T 1 -B "${ADDR[1]}" -p $PORT -b "$RATE" -l "$LEN" -t "$SECS" >"$TMP/client-$label.log" 2>&1 || true
    fi
    sleep 1.5
    local after
    read -r -a after <<<"$(sender_counters | tr '\n' ' ')"
    SENDER+=("$(printf '%-10s %12s %12s %12s' "$label" $((after[2] - before[2])) $((after[0] - before[0])) $((after[1] - before[1])))")
    for p in "${srv[@]}"; do kill "$p" 2>/dev/null || true; done
    wait "${srv[@]}" 2>/dev/null || true
    local i=0
    for r in "$@"; do
        read -r got sent pct < <(parse_server "${logs[$i]}")
        local rate=n/a
        [ "$got" = n/a ] || rate=$(printf '%.0f' "$(echo "$got / $SECS" | bc -l)")
        local rx=$(($(rx_packets "$r") - rxb[i]))
        RESULTS+=("$(printf '%-10s %-5s %10s %10s %10s %8s %12s' "$label" "n$r" "$sent" "$got" "$rate" "$pct" "$rx")")
        i=$((i + 1))
    done
}

run_case fanout1 2
run_case fanout2 2 3
run_case fanout3 2 3 4
run_case unicast 2

echo
echo "weftnet multicast bench: offered $RATE, ${LEN}-byte datagrams, ${SECS} s, TTL 1, $(nproc) cores"
echo "(sent/recvd/loss: iperf 2 server report, in datagrams; weft0_rx: packets weftnet wrote into the receiver's weft0)"
printf '%-10s %-5s %10s %10s %10s %8s %12s\n' case rcvr sent recvd "recvd/s" "loss%" weft0_rx
for r in "${RESULTS[@]}"; do echo "$r"; done
echo
echo "sender (n1): packets into weft0 by the kernel, and weftnet's tx_packets / tx_copies for $GROUP"
printf '%-10s %12s %12s %12s\n' case weft0_tx tx_packets tx_copies
for r in "${SENDER[@]}"; do echo "$r"; done
echo
echo "node 1 multicast counters:"
status 1 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps(s.get("multicast"), indent=1)); print({k:v for k,v in s.get("drops",{}).items() if k.startswith("mcast")})'
