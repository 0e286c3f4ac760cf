#!/usr/bin/env python3
"""Instructions per request of Keel builds, counted by callgrind: a figure that holds to within
1–2% from run to run on this noisy machine, where CPU time per request moves by 20% or more.
A run that made fewer requests counts a little more each: the writer's commits are shared by
fewer calls (the server's idle background, timers and heartbeats, is only ~150 instructions a
request). `--repeat` gives the median of runs.

Each build runs as `keel serve` under `valgrind --tool=callgrind` (fsync on, default log level, a
temporary SQLite store, the nginx no-op function of bench/outside.py). A build may carry an
environment of its own, as in bench/ab.py: `warn=target/release/keel:RUST_LOG=warn`. wrk warms it for 3 s, the
counters are zeroed (`callgrind_control -z`), wrk drives it again (4 connections, --seconds), the
counters are dumped, and the instructions of every thread are divided by the requests wrk made.
For `async` the counting runs until every accepted invocation has completed (by Keel's metrics),
so each invocation's attempt and completion are in the count.

What it counts: user-space instructions only. System calls (reads, writes, fsync) and the
kernel's side of TCP are not in it, and valgrind runs one thread at a time, so the writer may
gather other batches than natively. Use it to compare builds doing the same work — a change
that removes work shows here when CPU time cannot show it — and CPU time (bench/ab.py) for what
that is worth natively. With --keep, the callgrind files stay for `callgrind_annotate
--inclusive=yes FILE` (where the instructions go, by function).

Needs valgrind (Debian: `apt-get install valgrind`), wrk and nginx, release builds.
Usage:   bench/instructions.py [--paths sync,async] [--seconds 8] [--repeat N] [--keep] LABEL=BINARY[:ENV=V;...] ...
         [--floor bench/floor/target/release/keel-floor]
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outside  # noqa: E402

def counter_sum(base, metric):
    """The sum of a Prometheus counter's series at `base`/metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric))


def count(label, binary, env, path, seconds, noop_port, lua, keep):
    """Instructions per request of one build on one path (run with `env` on top of Keel's
    default environment), and the callgrind file."""
    tmp = tempfile.mkdtemp(prefix=f"keel-instructions-{label}-")
    if label == "floor":  # bench/floor: LISTEN_ADDR FUNCTION_URL
        port = outside.free_port()
        args = [f"127.0.0.1:{port}", f"http://127.0.0.1:{noop_port}/"]
    else:
        conf, port = outside.keel_config(tmp, noop_port, True, 64)
        args = ["serve", "-c", conf]
    out = os.path.join(tmp, "callgrind.out")
    with open(os.path.join(tmp, "keel.log"), "w") as log:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, *args],
            stdout=log, stderr=log, env={**outside.keel_env(), **env},
        )
    base = f"http://127.0.0.1:{port}"
    target = f"{base}/v1/functions/noop/{outside.PATHS[path]}"

    def settle():
        # By the metrics, not by listing what is left (a scan of the function's rows, which would
        # be counted too): every accepted invocation completed.
        while path == "async" and counter_sum(base, "keel_invocations_completed_total") < counter_sum(
            base, "keel_invocations_accepted_total"
        ):
            time.sleep(0.1)

    try:
        outside.wait_port(port, label, proc, limit=120)
        # Under valgrind the first answers (code run for the first time) can take seconds.
        outside.wrk(target, 4, 3, lua, timeout=30)
        settle()
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        run = outside.wrk(target, 4, seconds, lua, timeout=30)
        settle()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        dumps = sorted(glob.glob(out + "*"), key=os.path.getmtime)
        total = None
        for line in open(dumps[-1]):
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if total is None:
            sys.exit(f"{label}: no totals in {dumps[-1]}")
        return total / run["requests"], run["requests"], dumps[-1]
    finally:
        proc.terminate()
        proc.wait()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("builds", nargs="+", metavar="LABEL=BINARY[:ENV=V;...]")
    parser.add_argument("--paths", default="sync,async")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--floor", metavar="BINARY", help="bench/floor's keel-floor, a row of the sync path")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each build, interleaved; with more than one, the median and range")
    args = parser.parse_args()
    builds = []
    for spec in args.builds:
        label, binary, env = outside.build_arg(spec)
        if label == "floor":
            sys.exit(f"{spec}: the label floor is --floor's")
        builds.append((label, binary, env))
    if args.floor:
        builds.append(("floor", os.path.abspath(args.floor), {}))
    paths = outside.paths_arg(args.paths)
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install valgrind wrk nginx-light)")
    os.environ["PATH"] += ":/usr/sbin"
    tmp = tempfile.mkdtemp(prefix="keel-instructions-")
    lua = outside.wrk_script(tmp)
    noop_port = outside.free_port()
    # Without outside.NOOP_LOCATION's JSON content type, as every figure of it so far was counted.
    nginx = outside.start_nginx(tmp, "noop", noop_port, "return 200 '{}';")
    try:
        print(f"instructions per request (callgrind, all threads, user space), wrk -c4 -d{args.seconds}s")
        runs = {}
        for path in paths:
            for r in range(args.repeat):
                # Interleaved, each round in the other order: a drift of the machine falls on all.
                for label, binary, env in builds if r % 2 == 0 else list(reversed(builds)):
                    if label == "floor" and path != "sync":
                        continue  # the floor has no async
                    per_request, requests, dump = count(label, binary, env, path, args.seconds, noop_port, lua, args.keep)
                    runs.setdefault((path, label), []).append(per_request)
                    kept = f"  {dump}" if args.keep else ""
                    print(f"{path:6} {label:12} {per_request:10,.0f}  ({requests} requests){kept}", flush=True)
        if args.repeat > 1:
            print(f"\nmedian [min–max] of {args.repeat} runs")
            for (path, label), values in runs.items():
                low, mid, high = min(values), statistics.median(values), max(values)
                print(f"{path:6} {label:12} {mid:10,.0f}  [{low:,.0f}–{high:,.0f}]")
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
