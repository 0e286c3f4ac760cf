#!/usr/bin/env python3
"""Builds side by side on the sync path, each served by one process for every round.

`bench/ab.py` starts a fresh Keel for each run, so each run also measures a new store and the
first seconds of a process; here each build (or the floor) is started once, warmed, and driven in
turns with the same nginx no-op behind all of them, the order reversed every other round. It
reports per build the median [range] of calls per second, and the medians of the process's CPU
per call (utime + stime, /proc/PID/stat) and of the host's idle share (/proc/stat) over the runs.

`--close` makes wrk ask for `Connection: close`: a new connection for every request, which is
what a client that does not keep connections open costs (BENCHMARKS.md, "Lanes: a connection
served by one thread").

Needs wrk and nginx, as bench/outside.py.
Usage:   bench/steady.py [--rounds 4] [--connections 32] [--duration 5] [--close]
                         LABEL=BINARY[:ENV=V;ENV=V] ...   (a LABEL starting with `floor` runs
                         BINARY as bench/floor's keel-floor)
Example: bench/steady.py before=/tmp/keel-before after=target/production/keel \\
             floor=bench/floor/target/release/keel-floor
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab  # noqa: E402  (starts a Keel or the floor)
import outside  # noqa: E402  (the harness: nginx, keel serve, wrk, one measured run)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--close", action="store_true", help="wrk asks for Connection: close")
    parser.add_argument("builds", nargs="+", metavar="LABEL=BINARY[:ENV=V;ENV=V]")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="keel-steady-")
    lua = outside.wrk_script(tmp)
    if args.close:
        with open(lua, "a") as f:
            f.write('wrk.headers["Connection"] = "close"\n')
    noop_port = outside.free_port()
    nginx = outside.start_nginx(tmp, "noop", noop_port, "location / { return 200 '{}'; }")
    served = {}
    try:
        for spec in args.builds:
            label, binary, env = outside.build_arg(spec)
            if label.startswith("floor"):
                env["FLOOR"] = "1"
            proc, base = ab.start(binary, env, tempfile.mkdtemp(dir=tmp), noop_port)
            served[label] = (proc, base + "/v1/functions/noop/invoke")
            outside.wrk(served[label][1], args.connections, 2, lua)  # warm
        rows = {label: [] for label in served}
        for r in range(args.rounds):
            for label in list(served) if r % 2 == 0 else list(reversed(served)):
                proc, url = served[label]
                run = outside.measure("sync", url, proc.pid, args.connections, args.duration, lua)
                rows[label].append((run["per_s"], run["cpu_us"], run["host_idle_pct"]))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {int(v[-1][0])}" for k, v in rows.items()),
                  file=sys.stderr, flush=True)
    finally:
        for proc, _ in served.values():
            proc.terminate()
            proc.wait()
        nginx.terminate()
        nginx.wait()
    close = ", Connection: close" if args.close else ""
    print(f"{args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s{close}, sync; medians")
    print(f"{'':12s} {'calls/s':>9s} {'range':>17s} {'cpu µs':>8s} {'idle %':>7s}")
    for label, runs in rows.items():
        rates = [r[0] for r in runs]
        print(f"{label:12s} {statistics.median(rates):9.0f} {f'{min(rates):.0f}–{max(rates):.0f}':>17s} "
              f"{statistics.median(r[1] for r in runs):8.1f} {statistics.median(r[2] for r in runs):7.1f}")


if __name__ == "__main__":
    main()
