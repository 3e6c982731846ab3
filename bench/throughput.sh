#!/usr/bin/env bash
# bench/throughput.sh — throughput, packet rate and latency of weftnet vs. other
# userspace WireGuard implementations, all measured in ONE run on ONE machine.
#
# What it measures, for every implementation below (side by side in one table):
#   tcp1, tcp4    iperf3 TCP throughput with 1 and 4 streams (STREAMS_LIST),
#                 end.sum_received.bits_per_second, median of RUNS runs
#   udp64, udp1400  UDP datagrams per second received with 64-byte payloads and
#                 with 1400-byte IP packets (1372-byte payloads, which fit the
#                 tunnels' MTU 1420 unfragmented), sender unlimited (iperf3 -u -b 0)
#   loss@RATE     UDP loss in % at a fixed offered rate (UDP_RATE, 1400-byte packets)
#   lat p50/p99   UDP ping-pong round trip (32 bytes, one at a time, a small Python
#                 client and echo server), idle and under a concurrent 1-stream
#                 TCP bulk transfer
#   added p50/p99 what the tunnel adds to that round trip: the same ping-pong over
#                 the raw veth runs interleaved with it (10 alternating rounds), and
#                 the difference of the percentiles is reported, so that the host's
#                 drift between one implementation's turn and the next cancels out
#   cpu/rt        CPU time both tunnel daemons spend per idle round trip (their
#                 threads' run time from /proc/PID/task/*/schedstat, counted over the
#                 tunnel's rounds only), in user and kernel mode together: kernel
#                 work done in a daemon's system calls (the veth and local delivery
#                 of what it sends or writes) counts; the client and echo server do
#                 not. Steadier from run to run than the round trip itself
#   head to head  the idle ping-pong and cpu/rt again, with boringtun, wireguard-go
#                 and weftnet (those in IMPLS) up at the same time, fresh, taking
#                 turns with each other and the raw veth in H2H_ROUNDS rounds; then
#                 tcp1 and tcp4 again, RUNS runs, each run going over every path in
#                 turn. The per-implementation turns above run minutes apart and the
#                 host drifts in between (the raw veth alone varies by a third from
#                 one turn to another); here the drift falls on every path alike, so
#                 these are the fair comparisons, with their own ratios
# from network namespace A to namespace B over:
#     raw           the veth pair itself (underlay, 10.201.0.1 -> 10.201.0.2)
#     boringtun     boringtun-cli (crates.io `boringtun-cli`)   10.202.1.0/24
#     wireguard-go  wireguard-go (Debian package)               10.202.2.0/24
#     weftnet       this repo's daemon (`weftnet up`)           10.202.3.0/24
#     weftnet-pods  pod to pod: a "pod" namespace behind each side's bridge
#                   (`weftnet up --block B --bridge BR`, gossip), as in
#                   Kubernetes mode: veth -> bridge -> routing -> weftnet
#                   10.203.1.0/24 -> 10.203.2.0/24
#   Every tunnel runs over the same veth, with MTU 1420, one implementation at a
#   time (the previous one is stopped first; all at once for the head to head).  Each is measured RUNS times for
#   SECONDS_PER_RUN seconds; the median is reported in Gbit/s together with the
#   ratios weftnet/boringtun, weftnet/wireguard-go and weftnet/raw.
#   Results are also written as JSON to bench/results/throughput-<date>.json,
#   including per-run numbers, TCP retransmits and the UDP counter deltas
#   (RcvbufErrors = datagrams the tunnel's UDP socket dropped) of both namespaces.
#
# How to run (as root; needs ip netns, /dev/net/tun, iperf3, wg, wireguard-go,
# python3):
#   bash bench/throughput.sh
#   RUNS=3 SECONDS_PER_RUN=3 IMPLS="raw boringtun wireguard-go" bash bench/throughput.sh
#
# Environment
#   IMPLS            implementations to run, in order (default: raw boringtun wireguard-go weftnet
#                    weftnet-pods)
#   RUNS             iperf3 TCP runs per implementation and stream count (default 3)
#   SECONDS_PER_RUN  duration of each iperf3 run (default 5)
#   STREAMS_LIST     TCP stream counts to measure, iperf3 -P (default "1 4")
#   UDP_RATE         offered rate of the fixed-rate UDP loss test (default 200M)
#   PINGS            round trips per latency measurement (default 2000)
#   EXTRAS=0         TCP only (no UDP and latency tests)
#   H2H              the head-to-head ping-pong (below): 1 (default) after the
#                    per-implementation turns, 0 to skip it, "only" for nothing else
#   H2H_ROUNDS       rounds the head-to-head ping-pong takes turns in (default 20)
#   H2H_TCP=0        no TCP runs in the head to head (by default RUNS runs per stream
#                    count over every path, taking turns)
#   IDLE_PEERS       peer counts for the idle measurement of weftnet (default "100 1000";
#                    empty: skip): CPU over IDLE_SECS (default 10) and RSS of a daemon
#                    with that many static peers and no traffic
#   WEFTNET_BIN      weftnet binary (default target/release/weftnet in the repo;
#                    built with `cargo build --release` if that default is missing)
#   BORINGTUN_THREADS  --threads for boringtun-cli (default: its own default, 4)
#   WEFTNET_WORKERS  weftnet's data-plane workers (--workers; passed through the
#                    environment; default: the number of cores)
#   KEEP_WORKDIR=1   keep the temp dir with daemon logs for debugging
#   RESULTS_DIR      where the JSON goes (default bench/results in the repo)
#
# Missing tools: `apt-get install -y --no-install-recommends iperf3 wireguard-go
# wireguard-tools iproute2`; boringtun-cli is installed with
# `cargo install boringtun-cli --locked` if it is not on PATH.
#
# Traffic only ever goes to addresses inside the two namespaces this script
# creates; everything (namespaces, processes, UAPI sockets) is removed on exit.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMPLS=${IMPLS:-"raw boringtun wireguard-go weftnet weftnet-pods"}
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
STREAMS_LIST=${STREAMS_LIST:-${STREAMS:-"1 4"}}
UDP_RATE=${UDP_RATE:-200M}
PINGS=${PINGS:-2000}
EXTRAS=${EXTRAS:-1}
H2H=${H2H:-1}
H2H_ROUNDS=${H2H_ROUNDS:-20}
H2H_TCP=${H2H_TCP:-1}
IDLE_PEERS=${IDLE_PEERS-"100 1000"}
IDLE_SECS=${IDLE_SECS:-10}
ECHO_PORT=5301
RESULTS_DIR=${RESULTS_DIR:-"$REPO_ROOT/bench/results"}
DEFAULT_WEFTNET_BIN="$REPO_ROOT/target/release/weftnet"
WEFTNET_BIN=${WEFTNET_BIN:-$DEFAULT_WEFTNET_BIN}
BORINGTUN_THREADS=${BORINGTUN_THREADS:-}
TUN_MTU=1420
WAIT_SECS=10               # bound for every readiness wait
IPERF_PORT=5201

[[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"

# Unique names for this run.  UAPI sockets live in the (shared)
# /var/run/wireguard, so each side of each tunnel gets its own ifname.
TAG=$$   # pid_max is 2^22, so "wbwgA" + 7 digits fits IFNAMSIZ
NS_A="wbA-$$"
NS_B="wbB-$$"
POD_A="wbPA-$$"
POD_B="wbPB-$$"
VETH_A="wbvA$TAG"
VETH_B="wbvB$TAG"
UNDER_A=10.201.0.1
UNDER_B=10.201.0.2

WORK=""
# the tunnel an up_NAME function brought up last: its daemons (for their CPU per
# round trip), A's interface and B's overlay address
TUNNEL_PIDS=""
TUNNEL_IF=""
TUNNEL_ADDR=""
SUB_PID=""
PIDFILE=""
IFFILE=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# process / cleanup helpers
# ---------------------------------------------------------------------------

alive() { # pid -> true if running (zombies count as dead)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

# start_bg NS LOGFILE CMD... : run CMD inside NS in the background; the pid
# (ip netns exec execs CMD, so it is the daemon's own pid) goes to LAST_PID
# and to $PIDFILE so the EXIT trap can kill it.
start_bg() {
    local ns=$1 logf=$2
    shift 2
    ip netns exec "$ns" "$@" >"$logf" 2>&1 </dev/null &
    LAST_PID=$!
    echo "$LAST_PID" >>"$PIDFILE"
}

stop_pid() {
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "pid $pid ignored SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    untrack_pid "$pid"
}

untrack_pid() {
    [[ -f $PIDFILE ]] && sed -i "/^$1\$/d" "$PIDFILE"
    return 0
}

# Stop every tracked process and remove tracked interfaces / UAPI sockets.
stop_tracked() {
    local pid ns ifname
    if [[ -f $PIDFILE ]]; then
        for pid in $(tac "$PIDFILE"); do stop_pid "$pid"; done
    fi
    if [[ -f $IFFILE ]]; then
        while read -r ns ifname; do
            ip -n "$ns" link del "$ifname" 2>/dev/null || true
            rm -f "/var/run/wireguard/$ifname.sock" "/var/run/wireguard/$ifname.name"
        done <"$IFFILE"
        : >"$IFFILE"
    fi
}

track_if() { echo "$1 $2" >>"$IFFILE"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $SUB_PID ]]; then # an implementation's subshell is still running
        kill -KILL "$SUB_PID" 2>/dev/null || true
        wait "$SUB_PID" 2>/dev/null || true
    fi
    [[ -n $WORK ]] && stop_tracked
    ip netns del "$POD_A" 2>/dev/null || true
    ip netns del "$POD_B" 2>/dev/null || true
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}

# wait_until DESC CMD... : poll CMD every 0.2 s, at most WAIT_SECS seconds.
# CMD exiting with 99 means "will never succeed" (e.g. the daemon died).
wait_until() {
    local desc=$1 deadline=$((SECONDS + WAIT_SECS)) rc
    shift
    while :; do
        rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        ((rc == 0)) && return 0
        ((rc == 99)) && { log "gave up waiting for $desc: process exited"; return 1; }
        ((SECONDS < deadline)) || { log "timed out after ${WAIT_SECS}s waiting for $desc"; return 1; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------
# preparation (before any namespace exists)
# ---------------------------------------------------------------------------

want() { [[ " $IMPLS " == *" $1 "* ]]; }

check_prereqs() {
    [[ $EUID -eq 0 ]] || die "must run as root (network namespaces, TUN)"
    local impl
    for impl in $IMPLS; do
        case $impl in raw | boringtun | wireguard-go | weftnet | weftnet-pods) ;; *) die "unknown implementation '$impl' in IMPLS" ;; esac
    done
    local t missing=()
    for t in ip iperf3 python3 ss; do command -v "$t" >/dev/null || missing+=("$t"); done
    if want boringtun || want wireguard-go || want weftnet; then command -v wg >/dev/null || missing+=(wg); fi
    want wireguard-go && { command -v wireguard-go >/dev/null || missing+=(wireguard-go); }
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (apt-get install -y --no-install-recommends iperf3 wireguard-go wireguard-tools iproute2 python3)"
    [[ -c /dev/net/tun ]] || die "/dev/net/tun missing"

    if want boringtun && ! command -v boringtun-cli >/dev/null; then
        log "boringtun-cli not found; cargo install boringtun-cli --locked"
        cargo install boringtun-cli --locked >&2 || die "cargo install boringtun-cli failed"
    fi
    if { want weftnet || want weftnet-pods; } && [[ ! -x $WEFTNET_BIN ]]; then
        [[ $WEFTNET_BIN == "$DEFAULT_WEFTNET_BIN" ]] || die "WEFTNET_BIN=$WEFTNET_BIN is not executable"
        log "building weftnet (cargo build --release)"
        (cd "$REPO_ROOT" && cargo build --release >&2) || die "cargo build --release failed"
        [[ -x $WEFTNET_BIN ]] || die "$WEFTNET_BIN still missing after build"
    fi
}

setup_underlay() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
    ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A"
    ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B"
    ip -n "$NS_A" link set "$VETH_A" up
    ip -n "$NS_B" link set "$VETH_B" up
    wait_until "veth link" ip netns exec "$NS_A" ping -c1 -W1 -q "$UNDER_B"
}

genkeys() { # PREFIX -> $WORK/PREFIX.key, $WORK/PREFIX.pub
    (umask 077 && wg genkey >"$WORK/$1.key")
    wg pubkey <"$WORK/$1.key" >"$WORK/$1.pub"
}

# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------

# UDP counters of both namespaces (drops there explain TCP retransmits)
snapshot_udp() { # NAME before|after
    ip netns exec "$NS_A" cat /proc/net/snmp >"$WORK/res/$1.snmp-a-$2"
    ip netns exec "$NS_B" cat /proc/net/snmp >"$WORK/res/$1.snmp-b-$2"
}

# iperf3_json OUT -> one JSON line with what the report needs, from iperf3's -J output
iperf3_json() {
    python3 - "$1" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
# iperf3 may print a warning line before its JSON
d = json.loads(text[text.find("{"):] if "{" in text else text)
if "error" in d:
    sys.exit("iperf3: " + d["error"])
e = d["end"]
if d["start"]["test_start"]["protocol"] != "UDP":
    print(json.dumps({"bits_per_second": e["sum_received"]["bits_per_second"],
                      "retransmits": e.get("sum_sent", {}).get("retransmits")}))
else:
    s = e.get("sum_received", e["sum"])
    got = s["packets"] - s["lost_packets"]
    print(json.dumps({"packets_per_second": got / s["seconds"],
                      "lost_percent": s["lost_percent"], "bits_per_second": s["bits_per_second"]}))
EOF
}

# client_run NAME.KIND CLIENT_NS ARGS... : one iperf3 client run appended to
# $WORK/res/NAME.KIND.runs
client_run() {
    local key=$1 cns=$2 out
    shift 2
    out="$WORK/iperf3-$key-$(date +%s%N).json"
    # in the background + wait, so a signal interrupts the run at once
    start_bg "$cns" "$out" timeout $((SECONDS_PER_RUN + 30)) \
        iperf3 -p "$IPERF_PORT" -t "$SECONDS_PER_RUN" --connect-timeout 3000 -J "$@"
    wait "$LAST_PID" || {
        log "iperf3 run for $key failed: $(head -c 400 "$out")"
        return 1
    }
    untrack_pid "$LAST_PID"
    iperf3_json "$out" >>"$WORK/res/$key.runs"
    log "$key: $(tail -n1 "$WORK/res/$key.runs")"
}

# start_echo NS LOG ADDR PORT: a UDP echo server in NS bound to ADDR:PORT (pid in
# LAST_PID)
start_echo() {
    local ns=$1 logf=$2 addr=$3 port=$4
    start_bg "$ns" "$logf" python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('$addr', $port))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)"
}

# ping_pong NAME.KIND CLIENT_NS ADDR [PIDS]: PINGS UDP round trips to the echo server
# at ADDR, in 10 rounds interleaved with as many to the underlay echo server
# (UNDER_B, port ECHO_PORT+1) when the client is in namespace A (a pod namespace has
# no path to the underlay); with PIDS (space-separated tunnel daemons), also the CPU
# time their threads run per tunnel round trip (bench/pingpong.py); one JSON line
# appended to $WORK/res/NAME.KIND.runs
ping_pong() {
    local key=$1 cns=$2 addr=$3 pids=${4:-}
    local targets=("t=$addr:$ECHO_PORT:${pids// /,}")
    [[ $cns == "$NS_A" ]] && targets+=("raw=$UNDER_B:$((ECHO_PORT + 1))")
    ip netns exec "$cns" timeout 120 python3 "$REPO_ROOT/bench/pingpong.py" 10 "$PINGS" "${targets[@]}" |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
out, raw = r["t"], r.get("raw", {})
out["under_p50_us"], out["under_p99_us"] = raw.get("p50_us"), raw.get("p99_us")
print(json.dumps(out))' >>"$WORK/res/$key.runs"
    log "$key: $(tail -n1 "$WORK/res/$key.runs")"
}

# measure NAME DEST_ADDR [CLIENT_NS SERVER_NS]: iperf3 and echo servers in
# SERVER_NS (default B) bound to DEST_ADDR, clients in CLIENT_NS (default A); one
# JSON object per run appended to $WORK/res/NAME.KIND.runs
measure() {
    local name=$1 addr=$2 cns=${3:-$NS_A} sns=${4:-$NS_B} i streams
    local portcheck="sport = :$IPERF_PORT"
    start_bg "$sns" "$WORK/iperf3-server-$name.log" iperf3 -s -B "$addr" -p "$IPERF_PORT"
    local srv=$LAST_PID
    wait_until "iperf3 server" bash -c "ip netns exec '$sns' ss -Hltn '$portcheck' | grep -q ." || return 1
    snapshot_udp "$name" before
    for streams in $STREAMS_LIST; do
        : >"$WORK/res/$name.tcp$streams.runs"
        for ((i = 1; i <= RUNS; i++)); do
            client_run "$name.tcp$streams" "$cns" -c "$addr" -P "$streams"
        done
    done
    snapshot_udp "$name" after
    if [[ $EXTRAS == 1 ]]; then
        client_run "$name.udp64" "$cns" -c "$addr" -u -b 0 -l 64
        client_run "$name.udp1400" "$cns" -c "$addr" -u -b 0 -l 1372
        client_run "$name.udploss" "$cns" -c "$addr" -u -b "$UDP_RATE" -l 1372
        start_echo "$sns" "$WORK/echo-$name.log" "$addr" "$ECHO_PORT"
        local echo=$LAST_PID
        # the underlay's echo, for the interleaved rounds (from namespace A only)
        local echo_under=
        if [[ $cns == "$NS_A" ]]; then
            start_echo "$NS_B" "$WORK/echo-under-$name.log" "$UNDER_B" "$((ECHO_PORT + 1))"
            echo_under=$LAST_PID
        fi
        sleep 0.5
        ping_pong "$name.lat" "$cns" "$addr" "$TUNNEL_PIDS"
        # the same under a concurrent bulk stream
        start_bg "$cns" "$WORK/iperf3-bulk-$name.json" timeout 60 \
            iperf3 -c "$addr" -p "$IPERF_PORT" -t 30 --connect-timeout 3000 -J
        local bulk=$LAST_PID
        sleep 1
        ping_pong "$name.latbulk" "$cns" "$addr"
        stop_pid "$bulk"
        stop_pid "$echo"
        if [[ -n $echo_under ]]; then stop_pid "$echo_under"; fi
    fi
    stop_pid "$srv"
}

# overlay check + measurement shared by all tunnel implementations
measure_tunnel() { # NAME IF_A OVERLAY_B
    local name=$1 ifa=$2 ob=$3
    wait_until "$name tunnel to pass ping" ip netns exec "$NS_A" ping -c1 -W1 -q "$ob" || return 1
    ip -n "$NS_A" -o link show "$ifa" | grep -o 'mtu [0-9]*' | awk '{print $2}' >"$WORK/res/$name.mtu"
    measure "$name" "$ob"
}

# ---------------------------------------------------------------------------
# implementations (each runs in its own subshell with `set -e`)
# ---------------------------------------------------------------------------

bench_raw() {
    ip -n "$NS_A" -o link show "$VETH_A" | grep -o 'mtu [0-9]*' | awk '{print $2}' >"$WORK/res/raw.mtu"
    measure raw "$UNDER_B"
}

uapi_ready() { # PID IFNAME
    alive "$1" || return 99
    [[ -S /var/run/wireguard/$2.sock ]]
}

# configure_wg_uapi PID NS IFNAME KEYPREFIX PORT PEERPREFIX PEER_ENDPOINT PEER_ALLOWED ADDR
# (shared by boringtun-cli and wireguard-go, both speak the wg UAPI)
configure_wg_uapi() {
    local pid=$1 ns=$2 ifname=$3 key=$4 port=$5 peer=$6 ep=$7 allowed=$8 addr=$9
    wait_until "UAPI socket /var/run/wireguard/$ifname.sock" uapi_ready "$pid" "$ifname"
    ip netns exec "$ns" wg set "$ifname" private-key "$WORK/$key.key" listen-port "$port" \
        peer "$(cat "$WORK/$peer.pub")" endpoint "$ep" allowed-ips "$allowed"
    ip -n "$ns" addr add "$addr" dev "$ifname"
    ip -n "$ns" link set "$ifname" mtu "$TUN_MTU" up
}

# up_uapi_tunnel NAME IFPREFIX NET PORT CMD... : start CMD IFNAME on both sides and
# configure them via wg (A is NET.1, B is NET.2); sets TUNNEL_PIDS, TUNNEL_IF and
# TUNNEL_ADDR.
up_uapi_tunnel() {
    local name=$1 ifp=$2 net=$3 port=$4
    shift 4
    local ifa="${ifp}A$TAG" ifb="${ifp}B$TAG"
    genkeys "$name-a"
    genkeys "$name-b"
    track_if "$NS_A" "$ifa"
    track_if "$NS_B" "$ifb"
    start_bg "$NS_A" "$WORK/$name-a.log" "$@" "$ifa"
    local pida=$LAST_PID
    start_bg "$NS_B" "$WORK/$name-b.log" "$@" "$ifb"
    local pidb=$LAST_PID
    TUNNEL_PIDS="$pida $pidb" TUNNEL_IF=$ifa TUNNEL_ADDR=$net.2
    configure_wg_uapi "$pida" "$NS_A" "$ifa" "$name-a" "$port" "$name-b" "$UNDER_B:$port" "$net.2/32" "$net.1/24"
    configure_wg_uapi "$pidb" "$NS_B" "$ifb" "$name-b" "$port" "$name-a" "$UNDER_A:$port" "$net.1/32" "$net.2/24"
}

# Each tunnel: up_NAME brings it up (overlay NET.1 in A, NET.2 in B, NET as in the
# header; sets TUNNEL_PIDS, TUNNEL_IF and TUNNEL_ADDR), bench_NAME also measures it.
# Called as plain commands, never in an `&&` list, so that `set -e` still stops at a
# failing step inside them.
up_boringtun() {
    local flags=(--foreground --disable-drop-privileges --verbosity error)
    [[ -n $BORINGTUN_THREADS ]] && flags+=(--threads "$BORINGTUN_THREADS")
    echo "boringtun-cli ${flags[*]} <ifname>" >"$WORK/res/boringtun.cmd"
    up_uapi_tunnel boringtun wbbt 10.202.1 51821 boringtun-cli "${flags[@]}"
}
bench_boringtun() {
    up_boringtun
    measure_tunnel boringtun "$TUNNEL_IF" "$TUNNEL_ADDR"
}

up_wireguard_go() {
    echo "wireguard-go -f <ifname>" >"$WORK/res/wireguard-go.cmd"
    up_uapi_tunnel wireguard-go wbwg 10.202.2 51822 wireguard-go -f
}
bench_wireguard_go() {
    up_wireguard_go
    measure_tunnel wireguard-go "$TUNNEL_IF" "$TUNNEL_ADDR"
}

weftnet_ready() { # PID NS STATE_DIR
    alive "$1" || return 99
    ip netns exec "$2" "$WEFTNET_BIN" status --state-dir "$3" --json
}

up_weftnet() {
    local net=10.202.3 port=51823 side ns ifname addr peer peer_under peer_ip state
    TUNNEL_PIDS="" TUNNEL_IF="wbwfA$TAG" TUNNEL_ADDR=$net.2
    genkeys weftnet-a
    genkeys weftnet-b
    for side in a b; do
        if [[ $side == a ]]; then
            ns=$NS_A addr=$net.1/24 peer=b peer_under=$UNDER_B peer_ip=$net.2
        else
            ns=$NS_B addr=$net.2/24 peer=a peer_under=$UNDER_A peer_ip=$net.1
        fi
        ifname="wbwf${side^^}$TAG"
        # a fresh state directory per bring-up (the head to head brings it up again)
        state=$(mktemp -d "$WORK/weftnet-state-$side.XXXXXX")
        cat >"$WORK/weftnet-$side.toml" <<EOF
mtu = $TUN_MTU

[[peer]]
public_key = "$(cat "$WORK/weftnet-$peer.pub")"
endpoint = "$peer_under:$port"
allowed_ips = ["$peer_ip/32"]
EOF
        track_if "$ns" "$ifname"
        local cmd=("$WEFTNET_BIN" up --config "$WORK/weftnet-$side.toml" --interface "$ifname"
            --address "$addr" --listen-port "$port" --state-dir "$state"
            --private-key-file "$WORK/weftnet-$side.key")
        [[ $side == a ]] && echo "weftnet up --config F --interface I --address A --listen-port $port --state-dir D --private-key-file K (mtu=$TUN_MTU in config)" >"$WORK/res/weftnet.cmd"
        start_bg "$ns" "$WORK/weftnet-$side.log" "${cmd[@]}"
        TUNNEL_PIDS+=" $LAST_PID"
        wait_until "weftnet status ($side)" weftnet_ready "$LAST_PID" "$ns" "$state"
    done
}
bench_weftnet() {
    up_weftnet
    measure_tunnel weftnet "$TUNNEL_IF" "$TUNNEL_ADDR"
}

# Pod to pod through bridge mode: each side runs `weftnet up --block --bridge` with
# gossip, and a "pod" namespace hangs off each bridge by a veth, as the CNI plugin
# wires pods in Kubernetes mode.
bench_weftnet_pods() {
    local port=51824 side ns pod block gw ifname bridge hostif
    "$WEFTNET_BIN" gensecret -o "$WORK/pods.secret"
    for side in a b; do
        if [[ $side == a ]]; then
            ns=$NS_A pod=$POD_A block=10.203.1
        else
            ns=$NS_B pod=$POD_B block=10.203.2
        fi
        ifname="wbpf${side^^}$TAG" bridge="wbbr${side^^}$TAG" hostif="wbpv${side^^}$TAG"
        mkdir -p "$WORK/weftnet-pods-state-$side"
        track_if "$ns" "$ifname"
        local cmd=("$WEFTNET_BIN" up --interface "$ifname" --listen-port "$port" --mtu "$TUN_MTU"
            --state-dir "$WORK/weftnet-pods-state-$side" --secret-file "$WORK/pods.secret"
            --block "$block.0/24" --bridge "$bridge")
        [[ $side == b ]] && cmd+=(--join "$UNDER_A:$port")
        [[ $side == a ]] && echo "weftnet up --secret-file S --block B --bridge BR [--join A] --mtu $TUN_MTU; pods on veths to the bridge" >"$WORK/res/weftnet-pods.cmd"
        start_bg "$ns" "$WORK/weftnet-pods-$side.log" "${cmd[@]}"
        TUNNEL_PIDS+=" $LAST_PID"
        wait_until "weftnet status ($side)" weftnet_ready "$LAST_PID" "$ns" "$WORK/weftnet-pods-state-$side"
        # the pod: a namespace on a veth to the bridge, default route via the gateway
        ip netns add "$pod"
        ip -n "$pod" link set lo up
        track_if "$ns" "$hostif"
        ip link add "$hostif" netns "$ns" mtu "$TUN_MTU" type veth peer name eth0 netns "$pod"
        wait_until "bridge $bridge" ip -n "$ns" link show "$bridge"
        ip -n "$ns" link set "$hostif" master "$bridge" up
        ip -n "$pod" link set eth0 mtu "$TUN_MTU" up
        ip -n "$pod" addr add "$block.10/24" dev eth0
        gw=$block.1
        wait_until "gateway $gw on $bridge" bash -c "ip -n '$ns' -4 addr show dev '$bridge' | grep -q 'inet $gw/'"
        ip -n "$pod" route add default via "$gw"
    done
    wait_until "pod to pod ping" ip netns exec "$POD_A" ping -c1 -W1 -q 10.203.2.10 || return 1
    echo "$TUN_MTU" >"$WORK/res/weftnet-pods.mtu"
    measure weftnet-pods 10.203.2.10 "$POD_A" "$POD_B"
}

# Head to head: the tunnels of IMPLS (boringtun, wireguard-go, weftnet node to node)
# up at the same time over the same veth, fresh (no traffic before), and one
# ping-pong that takes turns between them and the raw veth in H2H_ROUNDS rounds of
# PINGS/H2H_ROUNDS round trips each (bench/pingpong.py). The per-implementation turns
# above run minutes apart, and the host drifts by tens of microseconds in between;
# here that drift falls on every tunnel alike, so their difference in idle latency
# and CPU per round trip is their own. One JSON line to $WORK/res/h2h.runs.
bench_h2h() {
    local targets=() paths=("raw=$UNDER_B") name
    start_echo "$NS_B" "$WORK/echo-h2h-raw.log" "$UNDER_B" "$((ECHO_PORT + 1))"
    targets+=("raw=$UNDER_B:$((ECHO_PORT + 1))")
    for name in boringtun wireguard-go weftnet; do
        want "$name" || continue
        "up_${name//-/_}"
        wait_until "$name tunnel to pass ping" ip netns exec "$NS_A" ping -c1 -W1 -q "$TUNNEL_ADDR"
        start_echo "$NS_B" "$WORK/echo-h2h-$name.log" "$TUNNEL_ADDR" "$ECHO_PORT"
        targets+=("$name=$TUNNEL_ADDR:$ECHO_PORT:${TUNNEL_PIDS// /,}")
        paths+=("$name=$TUNNEL_ADDR")
    done
    sleep 0.5
    ip netns exec "$NS_A" timeout 300 python3 "$REPO_ROOT/bench/pingpong.py" \
        "$H2H_ROUNDS" "$PINGS" "${targets[@]}" >>"$WORK/res/h2h.runs"
    log "h2h: $(tail -n1 "$WORK/res/h2h.runs")"
    [[ $H2H_TCP == 1 ]] || return 0
    # TCP, interleaved: each run of each stream count goes over every path in turn
    # (the first path rotating from run to run), so that a slow minute of the host
    # falls on all of them; one server for all paths (the runs never overlap).
    local i k streams path
    start_bg "$NS_B" "$WORK/iperf3-server-h2h.log" iperf3 -s -p "$IPERF_PORT"
    local srv=$LAST_PID
    wait_until "iperf3 server" bash -c "ip netns exec '$NS_B' ss -Hltn 'sport = :$IPERF_PORT' | grep -q ."
    for ((i = 0; i < RUNS; i++)); do
        for streams in $STREAMS_LIST; do
            for ((k = 0; k < ${#paths[@]}; k++)); do
                path=${paths[$(((i + k) % ${#paths[@]}))]}
                client_run "h2h-${path%%=*}.tcp$streams" "$NS_A" -c "${path#*=}" -P "$streams"
            done
        done
    done
    stop_pid "$srv"
}

# Idle cost: a weftnet daemon in A with N static peers (random public keys, endpoints
# in B where nothing answers, so no handshake starts without traffic) and no traffic.
# Writes {"peers": N, "cpu_percent": ..., "rss_mib": ...} lines to $WORK/res/idle.runs
bench_idle() {
    local n ifname pid t0 t1 hz
    hz=$(getconf CLK_TCK)
    : >"$WORK/res/idle.runs"
    genkeys weftnet-idle
    for n in $IDLE_PEERS; do
        ifname="wbid$n"
        python3 - "$n" "$UNDER_B" >"$WORK/idle-$n.toml" <<'EOF'
import base64, os, sys
n, host = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print("[[peer]]")
    print(f'public_key = "{base64.b64encode(os.urandom(32)).decode()}"')
    print(f'endpoint = "{host}:{40000 + i}"')
    print(f'allowed_ips = ["10.240.{i // 250}.{i % 250 + 1}/32"]')
EOF
        mkdir -p "$WORK/idle-state-$n"
        track_if "$NS_A" "$ifname"
        start_bg "$NS_A" "$WORK/idle-$n.log" "$WEFTNET_BIN" up --config "$WORK/idle-$n.toml" \
            --interface "$ifname" --address 10.239.0.1/24 --listen-port 51825 \
            --state-dir "$WORK/idle-state-$n" --private-key-file "$WORK/weftnet-idle.key"
        pid=$LAST_PID
        wait_until "weftnet status (idle, $n peers)" weftnet_ready "$pid" "$NS_A" "$WORK/idle-state-$n" || return 1
        sleep 2
        t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        sleep "$IDLE_SECS"
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        python3 -c "
import json
rss = [l for l in open('/proc/$pid/status') if l.startswith('VmRSS:')][0].split()[1]
print(json.dumps({'peers': $n, 'cpu_percent': ($t1 - $t0) / $hz / $IDLE_SECS * 100, 'rss_mib': int(rss) / 1024}))" >>"$WORK/res/idle.runs"
        log "idle: $(tail -n1 "$WORK/res/idle.runs")"
        stop_pid "$pid"
    done
}

run_impl() { # runs in a subshell
    local impl=$1
    trap stop_tracked EXIT
    trap 'exit 143' TERM
    case $impl in
        raw) bench_raw ;;
        boringtun) bench_boringtun ;;
        wireguard-go) bench_wireguard_go ;;
        weftnet) bench_weftnet ;;
        weftnet-pods) bench_weftnet_pods ;;
        h2h) bench_h2h ;;
        idle) bench_idle ;;
    esac
}

# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

report() {
    mkdir -p "$RESULTS_DIR"
    local out
    out="$RESULTS_DIR/throughput-$(date -u +%Y%m%dT%H%M%SZ).json"
    local versions=()
    command -v boringtun-cli >/dev/null && versions+=("boringtun-cli=$(boringtun-cli --version 2>/dev/null | head -n1)")
    command -v wireguard-go >/dev/null && versions+=("wireguard-go=$(wireguard-go --version 2>/dev/null | head -n1)")
    versions+=("iperf3=$(iperf3 --version 2>/dev/null | head -n1)")
    { want weftnet || want weftnet-pods; } && versions+=("weftnet_git=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)")
    local per_impl=1
    [[ $H2H == only ]] && per_impl=0
    python3 - "$WORK/res" "$out" "$IMPLS" "$RUNS" "$SECONDS_PER_RUN" "$STREAMS_LIST" "$TUN_MTU" "$UDP_RATE" "$per_impl" "$H2H_ROUNDS" "$PINGS" "${versions[@]}" <<'EOF'
import datetime, json, os, platform, statistics, sys
resdir, out, impls, runs, secs, streams_list, mtu, udp_rate, per_impl, h2h_rounds, pings = sys.argv[1:12]
versions = dict(v.split("=", 1) for v in sys.argv[12:])
impls = impls.split() if per_impl == "1" else []
streams_list = streams_list.split()

def read(name, ext):
    p = os.path.join(resdir, f"{name}.{ext}")
    return open(p).read().strip() if os.path.exists(p) else None

def runs_of(name, kind):
    return [json.loads(l) for l in (read(f"{name}.{kind}", "runs") or "").splitlines() if l.strip()]

def udp_counters(text):
    rows = [l.split()[1:] for l in text.splitlines() if l.startswith("Udp:")]
    return dict(zip(rows[0], map(int, rows[1]))) if len(rows) >= 2 else {}

def udp_delta(name):
    out = {}
    for side in ("a", "b"):
        b, a = read(name, f"snmp-{side}-before"), read(name, f"snmp-{side}-after")
        if b and a:
            cb, ca = udp_counters(b), udp_counters(a)
            out[f"ns_{side}"] = {k: ca[k] - cb.get(k, 0) for k in
                                 ("InDatagrams", "OutDatagrams", "InErrors", "RcvbufErrors", "SndbufErrors")
                                 if k in ca}
    return out or None

results = {}
for name in impls:
    r = {"status": read(name, "status") or "failed", "tcp": {}}
    for st in streams_list:
        rs = runs_of(name, f"tcp{st}")
        t = {"runs_gbps": [x["bits_per_second"] / 1e9 for x in rs],
             "retransmits": [x["retransmits"] for x in rs]}
        if t["runs_gbps"]:
            t["median_gbps"] = statistics.median(t["runs_gbps"])
            t["min_gbps"], t["max_gbps"] = min(t["runs_gbps"]), max(t["runs_gbps"])
        r["tcp"][st] = t
    for kind in ("udp64", "udp1400", "udploss", "lat", "latbulk"):
        rs = runs_of(name, kind)
        if rs:
            r[kind] = rs[-1]
    mtu_v = read(name, "mtu")
    r["mtu"] = int(mtu_v) if mtu_v and mtu_v.isdigit() else None
    r["command"] = read(name, "cmd")
    r["udp_counter_delta"] = udp_delta(name)
    if r["status"] != "ok":
        r["error_log_tail"] = read(name, "err")
    results[name] = r

def tcp(n, st):
    return results.get(n, {}).get("tcp", {}).get(st, {}).get("median_gbps")

def ratios_of(median, ours):
    """weftnet's TCP medians over the others', by `median(name, streams)`"""
    out = {}
    for st in streams_list:
        for w in ours:
            for other in ("boringtun", "wireguard-go", "raw"):
                a, b = median(w, st), median(other, st)
                out[f"tcp{st} {w}/{other}"] = (a / b) if (a is not None and b) else None
    return out

ratios = ratios_of(tcp, ("weftnet", "weftnet-pods"))

doc = {
    "benchmark": f"iperf3 TCP ({' and '.join(streams_list)} streams), UDP packet rate and loss, UDP ping-pong latency; netns A -> netns B over veth",
    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "machine": platform.machine(),
             "loadavg_1min_at_start": float(read("host", "loadavg") or 0),
             "loadavg_1min_at_end": float(open("/proc/loadavg").read().split()[0])},
    "params": {"runs": int(runs), "seconds_per_run": int(secs), "streams": streams_list,
               "tunnel_mtu": int(mtu), "udp_rate": udp_rate},
    "versions": versions,
    "results": results,
    "ratios": ratios,
    "idle": [json.loads(l) for l in (read("idle", "runs") or "").splitlines() if l.strip()],
    "head_to_head": None,
}
h2h = [json.loads(l) for l in (read("h2h", "runs") or "").splitlines() if l.strip()]
h2h_tcp = {}
for n in ("raw", "boringtun", "wireguard-go", "weftnet"):
    for st in streams_list:
        gbps = [x["bits_per_second"] / 1e9 for x in runs_of(f"h2h-{n}", f"tcp{st}")]
        if gbps:
            h2h_tcp.setdefault(n, {})[st] = {"runs_gbps": gbps, "median_gbps": statistics.median(gbps)}
h2h_ratios = ratios_of(lambda n, st: h2h_tcp.get(n, {}).get(st, {}).get("median_gbps"), ("weftnet",))
h2h_ratios = {k: v for k, v in h2h_ratios.items() if v is not None}
if h2h or h2h_tcp:
    doc["head_to_head"] = {"rounds": int(h2h_rounds), "round_trips_per_path": int(pings),
                           "results": h2h[-1] if h2h else {}, "tcp": h2h_tcp, "ratios": h2h_ratios}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def f(v, spec):
    return format(v, spec) if v is not None else "n/a"

print()
if impls:
    print(f"median of {runs} x {secs}s iperf3 runs; load {doc['host']['loadavg_1min_at_start']} at start, "
          f"{doc['host']['loadavg_1min_at_end']} at end; {os.cpu_count()} CPUs")
    cols = [f"tcp{st} Gb/s" for st in streams_list] + ["udp64 kpps", "udp1400 kpps",
            f"loss@{udp_rate}", "lat p50/p99 us", "added p50/p99", "bulk p50/p99 us", "added p50/p99"]
    print(f"{'implementation':<14} " + " ".join(f"{c:>15}" for c in cols) + "  status")
    for name in impls:
        r = results[name]
        row = [f(tcp(name, st), ".2f") for st in streams_list]
        row.append(f(r.get("udp64", {}).get("packets_per_second", None) and r["udp64"]["packets_per_second"] / 1e3, ".0f"))
        row.append(f(r.get("udp1400", {}).get("packets_per_second", None) and r["udp1400"]["packets_per_second"] / 1e3, ".0f"))
        row.append(f(r.get("udploss", {}).get("lost_percent"), ".2f") + ("%" if "udploss" in r else ""))
        for k in ("lat", "latbulk"):
            l = r.get(k, {})
            row.append(f"{f(l.get('p50_us'), '.0f')}/{f(l.get('p99_us'), '.0f')}")
            row.append(f"{f(l.get('added_p50_us'), '.0f')}/{f(l.get('added_p99_us'), '.0f')}")
        print(f"{name:<14} " + " ".join(f"{c:>15}" for c in row) + f"  {r['status']}")
    print()
    for k, v in ratios.items():
        if v is not None:
            print(f"{k:<30} {v:6.3f}")
    for k, what in (("lat", "idle"), ("latbulk", "under bulk")):
        added = [(n, results[n].get(k, {}).get("added_p50_us")) for n in impls if n != "raw"]
        added = [(n, v) for n, v in added if v is not None]
        if added:
            print(f"round trip added over the raw veth, p50, {what}: " +
                  ", ".join(f"{n} {v:.0f} us" for n, v in added))
    cpu = [(n, results[n].get("lat", {}).get("cpu_us_per_rt")) for n in impls]
    cpu = [(n, v) for n, v in cpu if v is not None]
    if cpu:
        print("CPU of both tunnel daemons per idle round trip: " +
              ", ".join(f"{n} {v:.1f} us" for n, v in cpu))
h2h = doc["head_to_head"]
if h2h:
    print()
    print(f"head to head, idle, fresh tunnels up at once, taking turns in {h2h['rounds']} rounds "
          f"({h2h['round_trips_per_path']} round trips per path):")
    res = h2h["results"]
    for n, o in res.items():
        print(f"  {n:<14} p50/p99 {f(o['p50_us'], '.0f'):>5}/{f(o['p99_us'], '.0f'):<5} us"
              + (f"  added {f(o.get('added_p50_us'), '.0f'):>4}/{f(o.get('added_p99_us'), '.0f'):<4} us" if n != "raw" else "")
              + (f"  CPU per round trip {o['cpu_us_per_rt']:.1f} us" if o.get("cpu_us_per_rt") is not None else "")
              + (f"  lost {o['lost']}" if o["lost"] else ""))
    w = res.get("weftnet")
    for other in ("boringtun", "wireguard-go"):
        o = res.get(other)
        if w and o and w.get("added_p50_us") is not None and o.get("added_p50_us") is not None:
            cpu_d = (f", CPU per round trip {w['cpu_us_per_rt'] - o['cpu_us_per_rt']:+.1f} us"
                     if w.get("cpu_us_per_rt") is not None and o.get("cpu_us_per_rt") is not None else "")
            print(f"  weftnet - {other}: added p50 {w['added_p50_us'] - o['added_p50_us']:+.0f} us, "
                  f"p99 {w['added_p99_us'] - o['added_p99_us']:+.0f} us{cpu_d}")
    if h2h["tcp"]:
        print(f"head to head, TCP, median of {runs} x {secs}s runs, every run over each path in turn:")
        for st in streams_list:
            got = [(n, t[st]["median_gbps"]) for n, t in h2h["tcp"].items() if st in t]
            print(f"  tcp{st} Gbit/s: " + ", ".join(f"{n} {v:.2f}" for n, v in got))
        for k, v in h2h["ratios"].items():
            print(f"  {k:<28} {v:6.3f}")
idle = doc["idle"]
if idle:
    print()
    print("weftnet idle (static peers, no traffic): " + "; ".join(
        f"{x['peers']} peers: {x['cpu_percent']:.2f} % of a core, {x['rss_mib']:.1f} MiB RSS" for x in idle))
    if len(idle) >= 2 and idle[-1]["peers"] > idle[0]["peers"]:
        per = (idle[-1]["rss_mib"] - idle[0]["rss_mib"]) * 1024 / (idle[-1]["peers"] - idle[0]["peers"])
        print(f"memory per peer: {per:.1f} KiB")
print()
print(f"results written to {out}")
EOF
}

# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

# run_sub NAME: run_impl NAME in its own subshell with `set -e`, so any failing step
# aborts just that part, in the background + wait so that signals act at once; then
# stop whatever it left. Its exit status goes to SUB_RC: run_sub itself must be a
# plain command (not in `if`, `&&` or `||`, where bash ignores `set -e` in the
# subshell too).
SUB_RC=0
run_sub() {
    (set -e; run_impl "$1") &
    SUB_PID=$!
    set +e
    wait "$SUB_PID"
    SUB_RC=$?
    set -e
    SUB_PID=""
    stop_tracked # belt and braces: nothing of this part survives into the next
}

# the head-to-head ping-pong: on by default when weftnet and another tunnel run with
# EXTRAS
want_h2h() {
    [[ $H2H != 0 && $EXTRAS == 1 ]] && want weftnet && { want boringtun || want wireguard-go; }
}

main() {
    check_prereqs
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/weftnet-bench.XXXXXX)
    PIDFILE="$WORK/pids"
    IFFILE="$WORK/ifaces"
    : >"$PIDFILE"
    : >"$IFFILE"
    mkdir -p "$WORK/res"
    log "namespaces $NS_A / $NS_B, impls: $IMPLS, $RUNS x ${SECONDS_PER_RUN}s, streams $STREAMS_LIST"
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "$load" >"$WORK/res/host.loadavg"
    if python3 -c "import sys; sys.exit(0 if float('$load') > 0.5 else 1)"; then
        log "WARNING: load average is $load; other CPU work (e.g. a cargo build) will skew the numbers"
    fi
    setup_underlay

    local impl failed=0
    if [[ $H2H != only ]]; then
        for impl in $IMPLS; do
            log "=== $impl ==="
            run_sub "$impl"
            if ((SUB_RC == 0)); then
                echo ok >"$WORK/res/$impl.status"
            else
                failed=1
                log "$impl FAILED (rc=$SUB_RC); daemon log tail:"
                local f
                for f in "$WORK/$impl"-a.log "$WORK/$impl"-b.log; do
                    [[ -f $f ]] && { echo "--- $(basename "$f")"; tail -n 15 "$f"; } | tee -a "$WORK/res/$impl.err" >&2
                done
            fi
        done
    fi
    if want_h2h; then
        log "=== head to head ==="
        run_sub h2h
        ((SUB_RC == 0)) || { failed=1; log "head to head FAILED (rc=$SUB_RC)"; }
    fi
    if [[ -n $IDLE_PEERS && $H2H != only ]] && { want weftnet || want weftnet-pods; }; then
        log "=== idle ==="
        run_sub idle
        ((SUB_RC == 0)) || log "idle measurement FAILED (rc=$SUB_RC)"
    fi
    report
    return "$failed"
}

main "$@"
