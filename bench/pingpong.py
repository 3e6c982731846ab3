"""UDP ping-pong over several paths at once, interleaved round by round.

Used by bench/throughput.sh. Each target is an echo server (ADDR:PORT) reached over one
path (the raw veth, or a tunnel); the client sends 32-byte datagrams one at a time and
times each round trip. The targets take turns in ROUNDS rounds, each round starting at
the next target, so that the host's drift over the run (other work, CPU frequency,
cache state) falls on all of them alike and their difference is the paths' own.

With PIDS (the path's tunnel daemons), it also counts the CPU time the daemons' threads
run during that path's turns (/proc/PID/task/*/schedstat: nanoseconds on a CPU, user
and kernel mode), per round trip.

Usage: pingpong.py ROUNDS PINGS NAME=ADDR:PORT[:PID,PID...] ...
Prints one JSON object: per NAME its p50_us, p99_us, lost, round_trips and
cpu_us_per_rt (null without PIDS); with a target named "raw", every other target also
gets added_p50_us and added_p99_us (its percentile minus raw's).
"""

import glob
import json
import socket
import sys
import time


def cpu_ns(pids):
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended between glob and open
    return total


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] if v else None


def parse_target(arg):
    name, rest = arg.split("=", 1)
    parts = rest.split(":")
    addr, port = parts[0], int(parts[1])
    pids = [p for p in (parts[2].split(",") if len(parts) > 2 else []) if p]
    return name, (addr, port), pids


def main():
    rounds, pings = int(sys.argv[1]), int(sys.argv[2])
    targets = [parse_target(a) for a in sys.argv[3:]]
    per_turn = max(1, pings // rounds)
    msg = b"p" * 32
    socks, rtts, lost, cpu = {}, {}, {}, {}
    for name, addr, _ in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.connect(addr)
        socks[name], rtts[name], lost[name], cpu[name] = s, [], 0, 0
    for r in range(rounds):
        for i in range(len(targets)):
            name, _, pids = targets[(r + i) % len(targets)]
            s = socks[name]
            c0 = cpu_ns(pids) if pids else 0
            for _ in range(per_turn):
                t = time.perf_counter_ns()
                s.send(msg)
                try:
                    s.recv(64)
                    rtts[name].append((time.perf_counter_ns() - t) / 1000)
                except socket.timeout:
                    lost[name] += 1
            if pids:
                cpu[name] += cpu_ns(pids) - c0
    out = {}
    for name, _, pids in targets:
        n = len(rtts[name])
        out[name] = {
            "p50_us": pct(rtts[name], 0.50),
            "p99_us": pct(rtts[name], 0.99),
            "lost": lost[name],
            "round_trips": n,
            "cpu_us_per_rt": cpu[name] / 1000 / n if pids and n else None,
        }
    if "raw" in out:
        for name, o in out.items():
            if name == "raw":
                continue
            for p in ("p50", "p99"):
                a, b = o[f"{p}_us"], out["raw"][f"{p}_us"]
                o[f"added_{p}_us"] = a - b if a is not None and b is not None else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
