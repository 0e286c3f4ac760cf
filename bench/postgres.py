#!/usr/bin/env python3
"""Sync calls or async invocations on a PostgreSQL store, builds side by side: `bench/ab.py` for PostgreSQL.

Starts a PostgreSQL cluster of its own (the system's `initdb` and `pg_ctl`, run as the
`postgres` user when this runs as root; fsync and every other setting at PostgreSQL's
defaults), and the nginx no-op of bench/outside.py. Each round runs every build in turn (the
order reversed every other round) as `keel serve` on a fresh database, with one function `noop`:
wrk warms it for 2 s, then drives `POST /v1/functions/noop/invoke` for --duration seconds at
--connections. Per build and round it reports calls/s, Keel's CPU a call, the CPU of every
PostgreSQL process a call, wrk's p50, and how many records were in the table when wrk ended, of the calls it made:
a sync call is answered before its record is written (docs/design.md), so a build whose
records fall behind shows it there. It also reports Keel's peak RSS (VmHWM). Medians over the
rounds at the end.

With --path async, wrk drives `POST /v1/functions/noop/invocations` instead, and each run is
measured end to end: the invocations accepted over the time from the first admission until the
API says none is queued, running or retrying (bench/outside.py's async path); it checks that
every one accepted succeeded, and reports the admission rate and latency beside it.

After the warm-up every run sends `ANALYZE`: a statement prepared on a fresh database keeps the
plan it got for an empty table until the table's statistics change, which autovacuum does within
a minute or so, longer than a run. With --statements N, each run also prints the N statements
that took PostgreSQL longest (pg_stat_statements, preloaded in the cluster): calls, time, rows.

With --stall S (sync only), every PostgreSQL process is stopped (SIGSTOP) for S seconds from 1 s into
wrk's run, then let go on (SIGCONT): a store that falls behind the calls. Keel keeps answering
while the records on their way are within their bound, then answers wait for their records
(dispatch/behind.rs); each run then also reports how many answers waited
(`keel_sync_answers_held_total`) and, after wrk, how long until every record was in the table.

Needs PostgreSQL (Debian: `apt-get install postgresql`), wrk and nginx.
Usage:   bench/postgres.py [--rounds 4] [--connections 32] [--duration 5] [--path sync|async]
                            [--stall S] [--statements N] LABEL=BINARY ...
Example: bench/postgres.py --rounds 4 before=/tmp/keel-old after=target/production/keel
"""

import argparse
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outside  # noqa: E402


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        sys.exit("no initdb under /usr/lib/postgresql/*/bin (install `postgresql`)")
    return os.path.dirname(found[-1])


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args


def pg_pids(pgdir):
    """The processes of the cluster in `pgdir`: the postmaster and its children."""
    with open(os.path.join(pgdir, "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in [postmaster, *children]]


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def peak_rss_mb(pid):
    """The peak resident set of `pid` so far (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def answers_held(base):
    """`keel_sync_answers_held_total` from Keel's /metrics (None for a build without it)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    found = re.search(r"^keel_sync_answers_held_total (\d+)", text, re.M)
    return int(found.group(1)) if found else None


def pg_cpu_seconds(pgdir):
    """CPU seconds of every process of the cluster in `pgdir` (the postmaster and its children)."""
    total = 0.0
    for pid in pg_pids(pgdir):
        try:
            total += outside.cpu_seconds(int(pid))
        except (FileNotFoundError, ProcessLookupError):
            pass  # a backend that ended meanwhile
    return total


def stall_postgres(pids, seconds):
    """From 1 s on, stops `pids` for `seconds`, then lets them go on."""
    time.sleep(1)
    signal_all(pids, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        signal_all(pids, signal.SIGCONT)


def measure_sync(args, base, pid, pgdir, lua, sql):
    """One run of sync calls: its row, and what else to print."""
    url = f"{base}/v1/functions/noop/invoke"
    warm = outside.wrk(url, args.connections, 2, lua)["requests"]
    sql("ANALYZE")  # autovacuum's work within a minute; it replans the statements cached empty
    keel0, pg0 = outside.cpu_seconds(pid), pg_cpu_seconds(pgdir)
    stall = None
    if args.stall:
        stall = threading.Thread(target=stall_postgres, args=(pg_pids(pgdir), args.stall))
        stall.start()
    run = outside.wrk(url, args.connections, args.duration, lua, timeout=int(2 + args.stall * 2))
    if stall:
        stall.join()
    keel1, pg1 = outside.cpu_seconds(pid), pg_cpu_seconds(pgdir)
    recorded = int(sql("SELECT count(*) FROM invocations"))
    n = run["requests"]
    extra = f"p99 {run['p99_ms']:.1f} ms  records at wrk's end {recorded} of {warm + n} calls"
    extra += f"  peak RSS {peak_rss_mb(pid):.0f} MB"
    if args.stall:
        waited = time.monotonic()
        while int(sql("SELECT count(*) FROM invocations")) < warm + n and time.monotonic() - waited < 60:
            time.sleep(0.1)
        extra += f"  answers held {answers_held(base)}  all recorded {time.monotonic() - waited:.1f} s after wrk"
    row = {"per_s": run["per_s"], "keel_us": (keel1 - keel0) * 1e6 / n, "postgres_us": (pg1 - pg0) * 1e6 / n,
           "p50_ms": run["p50_ms"]}
    return row, extra


def statements(sql, n):
    """The `n` statements of the database that took the server longest since it was created
    (warm-up included), one a line: calls, total and mean time, rows, and the statement's start."""
    rows = sql("SELECT calls, round(total_exec_time), round(mean_exec_time::numeric, 3), rows, "
               "left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements "
               "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
               f"ORDER BY total_exec_time DESC LIMIT {n}")
    lines = [line.split("|") for line in rows.splitlines()]
    return "".join(f"\n    {c:>8} calls {t:>7} ms {m:>7} ms each {r:>8} rows  {q}" for c, t, m, r, q in lines)


def wait_drained(base, limit=120):
    end = time.monotonic() + limit
    while not outside.drained(base):
        if time.monotonic() > end:
            sys.exit(f"{base}: invocations still waiting {limit} s after wrk")
        time.sleep(0.005)


def measure_async(args, base, pid, pgdir, lua, sql):
    """One run of async invocations, end to end: accepted invocations over the time from the
    first admission until the API says none is queued, running or retrying."""
    url = f"{base}/v1/functions/noop/invocations"
    warm = outside.wrk(url, args.connections, 2, lua)["requests"]
    wait_drained(base)
    sql("ANALYZE")  # autovacuum's work within a minute; it replans the statements cached empty
    keel0, pg0 = outside.cpu_seconds(pid), pg_cpu_seconds(pgdir)
    start = time.monotonic()
    run = outside.wrk(url, args.connections, args.duration, lua)
    wait_drained(base)
    elapsed = time.monotonic() - start
    keel1, pg1 = outside.cpu_seconds(pid), pg_cpu_seconds(pgdir)
    n = run["requests"]
    succeeded = int(sql("SELECT count(*) FROM invocations WHERE status = 'succeeded'"))
    if succeeded < warm + n:
        sys.exit(f"{base}: {succeeded} invocations succeeded of {warm + n} accepted")
    extra = (f"admitted {run['per_s']:.0f}/s  p99 {run['p99_ms']:.1f} ms  "
             f"succeeded {succeeded} of {warm + n} accepted  peak RSS {peak_rss_mb(pid):.0f} MB")
    row = {"per_s": n / elapsed, "keel_us": (keel1 - keel0) * 1e6 / n, "postgres_us": (pg1 - pg0) * 1e6 / n,
           "p50_ms": run["p50_ms"]}
    return row, extra


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--stall", type=float, default=0, help="stop PostgreSQL this long (s), 1 s into each run")
    parser.add_argument("--path", choices=("sync", "async"), default="sync")
    parser.add_argument("--statements", type=int, default=0, metavar="N",
                        help="print the N statements that took PostgreSQL longest in each run (pg_stat_statements)")
    parser.add_argument("builds", nargs="+", type=outside.build_arg, metavar="LABEL=BINARY")
    args = parser.parse_args()
    if args.stall and args.path != "sync":
        sys.exit("--stall is for the sync path: records written behind")
    bin_dir = pg_bin()
    tmp = tempfile.mkdtemp(prefix="keel-postgres-")
    os.chmod(tmp, 0o777)
    pgdir = os.path.join(tmp, "pg")
    subprocess.run(as_postgres([f"{bin_dir}/initdb", "-D", pgdir, "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    pgport = outside.free_port()
    preload = " -c shared_preload_libraries=pg_stat_statements" if args.statements else ""
    subprocess.run(as_postgres([f"{bin_dir}/pg_ctl", "-D", pgdir, "-l", f"{tmp}/pg.log", "-w", "-o",
                                f"-p {pgport} -k {tmp} -c listen_addresses=127.0.0.1{preload}", "start"]),
                   check=True, capture_output=True)
    noop_port = outside.free_port()
    nginx = outside.start_nginx(tmp, "noop", noop_port, outside.NOOP_LOCATION)
    lua = outside.wrk_script(tmp)

    def psql(db, sql):
        out = subprocess.run([f"{bin_dir}/psql", "-h", "127.0.0.1", "-p", str(pgport), "-U", "postgres", "-d", db,
                              "-tAc", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    results = {label: [] for label, _, _ in args.builds}
    try:
        for r in range(args.rounds):
            order = args.builds if r % 2 == 0 else args.builds[::-1]
            for label, binary, env in order:
                db = f"keel_{r}_{label}".lower().replace("-", "_")
                psql("postgres", f"CREATE DATABASE {db}")
                store_url = f"postgres://postgres@127.0.0.1:{pgport}/{db}"
                keel, base = outside.start_keel(binary, tempfile.mkdtemp(dir=tmp), noop_port, True, 1024, env=env,
                                                store_url=store_url)
                if args.statements:
                    psql(db, "CREATE EXTENSION pg_stat_statements")
                try:
                    measure = measure_async if args.path == "async" else measure_sync
                    row, extra = measure(args, base, keel.pid, pgdir, lua, lambda sql: psql(db, sql))
                    top = statements(lambda sql: psql(db, sql), args.statements) if args.statements else ""
                finally:
                    keel.terminate()
                    keel.wait()
                results[label].append(row)
                print(f"round {r + 1} {label:10} {row['per_s']:8.0f}/s  keel {row['keel_us']:6.1f} µs  "
                      f"postgres {row['postgres_us']:5.1f} µs  p50 {row['p50_ms']:.3f} ms  {extra}{top}", flush=True)
    finally:
        nginx.terminate()
        subprocess.run(as_postgres([f"{bin_dir}/pg_ctl", "-D", pgdir, "-m", "fast", "-w", "stop"]), capture_output=True)
    print(f"\n{args.path}, {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s; medians")
    for label, rows in results.items():
        med = lambda k: statistics.median(x[k] for x in rows)  # noqa: E731
        print(f"{label:10} {med('per_s'):8.0f}/s  keel {med('keel_us'):6.1f} µs  postgres {med('postgres_us'):5.1f} µs  "
              f"p50 {med('p50_ms'):.3f} ms")


if __name__ == "__main__":
    main()
