#!/usr/bin/env python3
"""Two or more builds of Keel side by side: the same outside load, rounds alternating, medians.

On a shared 2-core VM one run of `bench/outside.py` moves by ±8 µs per call from run to run
(BENCHMARKS.md, "Many small cuts"), more than most single changes save. This script runs the
builds in turn, reversing their order every other round so that a drift of the machine falls on
each alike, and reports for each build and path the median and the range over the rounds of:

  cpu      whole-process CPU per request (utime + stime, /proc/PID/stat), µs
  worker   the tokio workers' share; lanes: the lanes' (threads serving connections, one per core);
           writer, fsync: the SQLite writer and its fsync thread
  per_s    requests per second (async: end to end, until nothing is left queued)
  switches context switches per request, voluntary + involuntary, all threads
  allocs   (with --allocs; needs perf and root) mimalloc allocations per request, counted by a
           uprobe in one more run per build and path after the rounds (a uprobe costs
           microseconds a hit: never counted during a timed run); deterministic where CPU time
           is not. The probe sits on `mi_malloc` in a build where mimalloc is the process's
           `malloc` (since `keel` links it so: Rust's and SQLite's allocations alike), and on
           `mi_malloc_aligned` in one that has it as Rust's global allocator only (the floor, and
           `keel` before: Rust's allocations only)

Paths: sync (`POST /v1/functions/noop/invoke`) and async (`.../invocations`, end to end), wrk
`-t1 -cC -dDs`, each Keel with a fresh SQLite store, fsync on, in front of an nginx no-op.

With `--floor BINARY` (bench/floor's keel-floor) the floor of Keel's HTTP stack runs in the rounds
too, as the row `floor` of the sync path.

Usage:   bench/ab.py [--rounds 6] [--paths sync,async] [--allocs] [--floor BINARY]
                     [--payload-bytes N] LABEL=BINARY[:ENV=V;ENV=V] ...
Example: bench/ab.py --rounds 8 before=/tmp/keel-before after=target/release/keel
         bench/ab.py quiet=target/release/keel 'off=target/release/keel:RUST_LOG=off'
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outside  # noqa: E402  (the harness: nginx, keel serve, wrk)

# Thread names (prefixes) of each column.
THREADS = {"worker": "tokio-rt-worker", "lanes": "keel-lane-", "writer": "keel-sqlite-wri", "fsync": "keel-sqlite-syn"}


def threads(pid):
    """CPU seconds and context switches of each thread name of `pid`, summed by name."""
    cpu, switches = {}, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        cpu[name] = cpu.get(name, 0) + (int(fields[11]) + int(fields[12])) / outside.TICKS
        switches += int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])
    return cpu, switches


def start(binary, env, tmp, noop_port):
    if env.get("FLOOR"):  # bench/floor: LISTEN_ADDR FUNCTION_URL
        port = outside.free_port()
        proc = subprocess.Popen([binary, f"127.0.0.1:{port}", f"http://127.0.0.1:{noop_port}/"],
                                env={**os.environ, **env})  # TOKIO_WORKER_THREADS sets its lanes too
        outside.wait_port(port, "keel-floor", proc)
        return proc, f"http://127.0.0.1:{port}"
    # The build's environment over Keel's default one: a build's `RUST_LOG` applies (outside.py
    # drops the caller's own, to run Keel as a user does).
    return outside.start_keel(binary, tmp, noop_port, True, 64, env=env)


def probe(label, binary):
    """A uprobe counting `binary`'s allocations; its event name."""
    event = f"keel_ab:malloc_{label}"
    subprocess.run(["perf", "probe", "-q", "-d", event], capture_output=True)
    symbols = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True).stdout
    overrides = any(line.split()[-1:] == ["malloc"] for line in symbols.splitlines())
    target = "mi_malloc" if overrides else "mi_malloc_aligned"
    subprocess.run(["perf", "probe", "-q", "-x", binary, "-a", f"{event}={target}"], check=True)
    return event


def one_run(binary, env, noop_port, lua, path, connections, duration, allocs_event=None):
    tmp = tempfile.mkdtemp(prefix="keel-ab-")
    proc, url = start(binary, env, tmp, noop_port)
    try:
        target = f"{url}/v1/functions/noop/{outside.PATHS[path]}"
        outside.wrk(target, connections, 1, lua)  # warm: connections, caches, the function's pool
        while path == "async" and not outside.drained(url):
            time.sleep(0.01)
        perf = None
        if allocs_event:
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", allocs_event, "-p", str(proc.pid)],
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(0.3)
        cpu0, sw0 = threads(proc.pid)
        run = outside.measure(path, target, proc.pid, connections, duration, lua,
                              base=url if path == "async" else None)
        cpu1, sw1 = threads(proc.pid)
        n = run["requests"]
        if perf:
            perf.send_signal(2)
            err = perf.communicate()[1]
            counts = [int(line.split(",")[0]) for line in err.splitlines() if line.split(",")[0].isdigit()]
            return {"allocs": counts[0] / n if counts else float("nan")}
        row = {"cpu": run["cpu_us"], "per_s": run["per_s"], "switches": (sw1 - sw0) / n}
        for key, name in THREADS.items():
            row[key] = sum(cpu1[t] - cpu0.get(t, 0) for t in cpu1 if t.startswith(name)) * 1e6 / n
        return row
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)  # its database and log: tens of MB a run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("builds", nargs="+", metavar="LABEL=BINARY[:ENV=V;...]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--paths", default="sync,async")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--payload-bytes", type=int, default=0,
                        help='a body of this many bytes ({"n":"xx…"}) instead of {"n":1}')
    parser.add_argument("--allocs", action="store_true", help="count allocations per request (perf uprobe)")
    parser.add_argument("--floor", metavar="BINARY", help="bench/floor's keel-floor, a row of the sync path")
    args = parser.parse_args()
    builds = []
    for spec in args.builds:
        builds.append(outside.build_arg(spec))
    if args.floor:
        builds.append(("floor", os.path.abspath(args.floor), {"FLOOR": "1"}))
    paths = outside.paths_arg(args.paths)

    def paths_of(label):
        return paths if label != "floor" else [p for p in paths if p == "sync"]  # the floor has no async

    os.environ["PATH"] += ":/usr/sbin"
    tmp = tempfile.mkdtemp(prefix="keel-ab-")
    lua = outside.wrk_script(tmp, args.payload_bytes)
    noop_port = outside.free_port()
    nginx = outside.start_nginx(tmp, "noop", noop_port, outside.NOOP_LOCATION)
    rows = {}
    try:
        for r in range(args.rounds):
            for label, binary, env in builds if r % 2 == 0 else list(reversed(builds)):
                for path in paths_of(label):
                    row = one_run(binary, env, noop_port, lua, path, args.connections, args.duration)
                    rows.setdefault((label, path), []).append(row)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for label, binary, env in builds if args.allocs else []:
            event = probe(label, binary)
            try:
                for path in paths_of(label):
                    counted = one_run(binary, env, noop_port, lua, path, args.connections, 2, event)
                    for row in rows[(label, path)]:
                        row.update(counted)
            finally:
                subprocess.run(["perf", "probe", "-q", "-d", event], capture_output=True)
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ["cpu", "worker", "lanes", "writer", "fsync", "per_s", "switches"] + (["allocs"] if args.allocs else [])
    print(f"{args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s; median [min–max]")
    for path in paths:
        print(f"\n{path:8s}" + "".join(f"{k:>24s}" for k in keys))
        for label, _, _ in builds:
            if (label, path) not in rows:
                continue
            cells = []
            for k in keys:
                values = [row[k] for row in rows[(label, path)]]
                digits = 0 if k == "per_s" else 2 if k == "switches" else 1
                cells.append(f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]")
            print(f"{label:8s}" + "".join(f"{c:>24s}" for c in cells))


if __name__ == "__main__":
    main()
