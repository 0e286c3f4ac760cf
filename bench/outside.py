#!/usr/bin/env python3
"""Keel measured from outside, as a user would: wrk drives nginx and Keel, side by side in one run.

Paths, each driven by `wrk -t1 -cC -dDs` POSTing `{"n":1}` (or, with --payload-bytes N, a body of N
bytes):
  direct   wrk -> nginx no-op (`return 200 '{}'`)
  proxy    wrk -> nginx reverse proxy (proxy_pass, upstream keepalive 64) -> nginx no-op
  sync     wrk -> keel serve, POST /v1/functions/noop/invoke -> nginx no-op
  async    wrk -> keel serve, POST /v1/functions/noop/invocations; end to end = accepted
           invocations / (first submit .. the API says none is left queued, running or retrying)
  floor    (with --floor BINARY) wrk -> bench/floor, the same sync call forwarded by axum, hyper and
           tokio alone (no store, spans, metrics, auth or flow control) -> nginx no-op: the least
           Keel's HTTP stack costs, so what Keel costs above it is Keel's own
and each again at one connection for the p50 overhead. With `--rounds N`, the proxy, floor, sync
and async runs at C connections are made N times in turn, and the ratios and CPU figures given
are the medians of the rounds' own: each ratio is of two runs seconds apart, so the host's drift
over the whole run (its load moves 20% and more from minute to minute) is not in it. Keel runs
as `keel serve` with its default log level and a temporary SQLite store, fsync on (`--no-fsync`
beside it only when asked). With `--http2` Keel calls its no-op over HTTP/2 (`http2 = true`; a
second nginx no-op listening h2c).

CPU per request is utime + stime of the process (from /proc/PID/stat) over a run, divided by the
requests of that run: Keel's, and the proxy nginx's for the baseline. Run nothing else heavy at the
same time; compare ratios from one run only. `idle%` is the host's idle time over a run (idle and
iowait, from /proc/stat): at C connections every process shares the cores, so cycles left idle are
throughput nobody got. Under Keel sync this host idles 12–15%, under the proxy 5–9% (BENCHMARKS.md,
"SQLite: no temporary B-tree per statement, no global locks", where the idle time comes from).

Needs: wrk and nginx (Debian: `apt-get install wrk nginx-light`), a release build of keel, and
for --floor: `cargo build --release --manifest-path bench/floor/Cargo.toml`.
Usage:   bench/outside.py [--keel target/release/keel] [--connections 32] [--duration 5]
                          [--no-fsync] [--http2] [--floor bench/floor/target/release/keel-floor]
                          [--payload-bytes N] [--rounds N] [--json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_port(port, what, proc, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} not listening on {port} after {limit} s")


NGINX = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/{name}-error.log warn;
pid {dir}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/{name}-proxy;
    keepalive_requests 1000000;
    {upstream}
    server {{
        listen 127.0.0.1:{port}{listen_options};
        location / {{ {location} }}
    }}
}}
"""


# The no-op function: every request answered `200 {}` as JSON.
NOOP_LOCATION = "default_type application/json; return 200 '{}';"


def wrk_script(tmp, payload_bytes=0):
    """The path of wrk's request script (LUA), written into `tmp`. With `payload_bytes` the body is
    `{"n":"xx…"}` of that many bytes instead of `{"n":1}`."""
    lua = os.path.join(tmp, "post.lua")
    body = '{"n":"' + "x" * max(payload_bytes - 8, 0) + '"}' if payload_bytes else '{"n":1}'
    with open(lua, "w") as f:
        f.write(LUA.format(body=body))
    return lua


def start_nginx(tmp, name, port, location, upstream="", listen_options=""):
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(dir=tmp, name=name, port=port, location=location, upstream=upstream,
                             listen_options=listen_options))
    proc = subprocess.Popen(["nginx", "-p", tmp, "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port, f"nginx {name}", proc)
    return proc


# The routes of a sync call and an async invocation of `noop`, by the paths' names.
PATHS = {"sync": "invoke", "async": "invocations"}


def paths_arg(text):
    """A `--paths` value (`sync,async`) as a list, or exit naming what is unknown."""
    paths = [p for p in text.split(",") if p]
    if unknown := [p for p in paths if p not in PATHS]:
        sys.exit(f"unknown path {unknown}: sync or async")
    return paths


def keel_config(tmp, noop_port, fsync, concurrency, http2=False, store_url=None):
    """A `keel serve` config in `tmp` (one function `noop`; the store `store_url`, by default a
    SQLite file there): its path and port."""
    port = free_port()
    conf = os.path.join(tmp, "keel.toml")
    store_url = store_url or f"sqlite://{tmp}/keel.db"
    with open(conf, "w") as f:
        f.write(
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[storage]\nurl = "{store_url}"\nfsync = {"true" if fsync else "false"}\n'
            f'[functions.noop]\nurl = "http://127.0.0.1:{noop_port}/"\nconcurrency = {concurrency}\n'
            + ("http2 = true\n" if http2 else "")
        )
    return conf, port


def build_arg(spec):
    """A build given as `LABEL=BINARY[:ENV=V;...]` (ab.py, instructions.py, steady.py): its
    label, the binary's absolute path and the environment it runs with on top of keel_env(), or
    exit naming what is wrong."""
    label, _, rest = spec.partition("=")
    binary, _, envs = rest.partition(":")
    if not label or not os.path.exists(binary):
        sys.exit(f"{spec}: expected LABEL=BINARY[:ENV=V;...] with an existing binary")
    try:
        env = dict(e.split("=", 1) for e in envs.split(";") if e)
    except ValueError:
        sys.exit(f"{spec}: each of the environment's entries is NAME=VALUE, separated by ';'")
    return label, os.path.abspath(binary), env


def keel_env():
    """The environment without `RUST_LOG`: Keel at its default level, as a user runs it."""
    return {k: v for k, v in os.environ.items() if k != "RUST_LOG"}


def start_keel(keel, tmp, noop_port, fsync, concurrency, http2=False, env=None, store_url=None):
    """`keel serve` of one function `noop` (on `store_url`, as keel_config); `env` (e.g. a
    build's `RUST_LOG`) over keel_env()."""
    conf, port = keel_config(tmp, noop_port, fsync, concurrency, http2, store_url)
    log = open(os.path.join(tmp, "keel.log"), "w")
    proc = subprocess.Popen([keel, "serve", "-c", conf], stdout=log, stderr=log, env={**keel_env(), **(env or {})})
    wait_port(port, "keel serve", proc)
    return proc, f"http://127.0.0.1:{port}"


# wrk's request script; `wrk_script` fills in `{body}`.
LUA = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url, connections, duration, lua, timeout=2):
    """One wrk run; `timeout` (s) is how long an answer may take before wrk counts an error."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}s", "--latency", "-s", lua, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    seconds = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))
    if re.search(r"requests in [\d.]+ms", out):
        seconds /= 1000
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if non2xx or errors:
        sys.exit(f"wrk {url}: not every answer was 2xx\n{out}")
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        latency[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return {"requests": requests, "seconds": seconds, "per_s": requests / seconds, **latency}


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def drained(base):
    for status in ("queued", "running", "retrying"):
        page = get_json(f"{base}/v1/invocations?function=noop&status={status}&limit=1")
        if page["items"]:
            return False
    return True


def host_times():
    """(all, idle) jiffies of the host so far: idle counts iowait too (a CPU with nothing to run)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4]


def measure(path, url, pid, connections, duration, lua, base=None):
    cpu0 = cpu_seconds(pid) if pid else None
    all0, idle0 = host_times()
    start = time.monotonic()
    run = wrk(url, connections, duration, lua)
    if base:  # async: end to end, until the API says nothing is left
        while not drained(base):
            time.sleep(0.002)
        elapsed = time.monotonic() - start
        run["submit_per_s"] = run["per_s"]
        run["per_s"] = run["requests"] / elapsed
    if pid:
        run["cpu_us"] = (cpu_seconds(pid) - cpu0) * 1e6 / run["requests"]
    all1, idle1 = host_times()
    run["host_idle_pct"] = 100.0 * (idle1 - idle0) / max(all1 - all0, 1)
    run["path"] = path
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keel", default="target/release/keel")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure proxy, floor, sync and async at C connections this many times in turn; report medians")
    parser.add_argument("--payload-bytes", type=int, default=0,
                        help='a body of this many bytes ({"n":"xx…"}) instead of {"n":1}')
    parser.add_argument("--http2", action="store_true",
                        help="Keel calls its no-op over HTTP/2 (h2c): `http2 = true`, a second nginx no-op listening h2c")
    parser.add_argument("--floor", metavar="BINARY",
                        help="also measure bench/floor's keel-floor: the sync call through axum, hyper and tokio alone")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: apt-get install wrk nginx-light")
    os.environ["PATH"] += ":/usr/sbin"
    tmp = tempfile.mkdtemp(prefix="keel-outside-")
    procs = []
    try:
        lua = wrk_script(tmp, args.payload_bytes)
        noop_port, proxy_port = free_port(), free_port()
        procs.append(start_nginx(tmp, "noop", noop_port, NOOP_LOCATION))
        upstream = f"upstream noop {{ server 127.0.0.1:{noop_port}; keepalive 64; }}"
        location = 'proxy_pass http://noop; proxy_http_version 1.1; proxy_set_header Connection "";'
        proxy = start_nginx(tmp, "proxy", proxy_port, location, upstream)
        procs.append(proxy)
        function_port = noop_port
        if args.http2:  # wrk speaks HTTP/1.1 to the first no-op; Keel speaks h2c to this one
            function_port = free_port()
            procs.append(start_nginx(tmp, "noop-h2c", function_port, NOOP_LOCATION, listen_options=" http2"))
        floor_url = None
        if args.floor:
            floor_port = free_port()
            floor = subprocess.Popen([args.floor, f"127.0.0.1:{floor_port}", f"http://127.0.0.1:{noop_port}/"])
            procs.append(floor)
            wait_port(floor_port, "keel-floor", floor)
            floor_url = f"http://127.0.0.1:{floor_port}/v1/functions/noop/invoke"
        keel, base = start_keel(args.keel, tmp, function_port, not args.no_fsync, 2 * args.connections, args.http2)
        procs.append(keel)
        c, d = args.connections, args.duration
        direct_url, proxy_url = f"http://127.0.0.1:{noop_port}/", f"http://127.0.0.1:{proxy_port}/"
        sync_url, async_url = (f"{base}/v1/functions/noop/{PATHS[p]}" for p in ("sync", "async"))
        # Warm every path (connections, the store's first pages) before measuring.
        for url in (direct_url, proxy_url, sync_url, async_url, floor_url):
            if url:
                wrk(url, c, 1, lua)
        while not drained(base):
            time.sleep(0.01)
        runs = {}
        for conns in (1, c):
            runs[("direct", conns)] = measure("direct", direct_url, None, conns, d, lua)
            runs[("proxy", conns)] = measure("proxy", proxy_url, proxy.pid, conns, d, lua)
            if floor_url:
                runs[("floor", conns)] = measure("floor", floor_url, floor.pid, conns, d, lua)
            runs[("sync", conns)] = measure("sync", sync_url, keel.pid, conns, d, lua)
        runs[("async", c)] = measure("async", async_url, keel.pid, c, d, lua, base=base)
        rounds = [{p: runs[(p, c)] for p in ("proxy", "floor", "sync", "async") if (p, c) in runs}]
        for _ in range(1, args.rounds):
            one = {"proxy": measure("proxy", proxy_url, proxy.pid, c, d, lua)}
            if floor_url:
                one["floor"] = measure("floor", floor_url, floor.pid, c, d, lua)
            one["sync"] = measure("sync", sync_url, keel.pid, c, d, lua)
            one["async"] = measure("async", async_url, keel.pid, c, d, lua, base=base)
            rounds.append(one)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    direct1 = runs[("direct", 1)]
    # Each round's ratios to its own proxy run, and its CPU figures; the medians over the rounds.
    for one in rounds:
        one["ratios"] = {p: r["per_s"] / one["proxy"]["per_s"] for p, r in one.items() if p != "proxy"}
    result = {
        "connections": c,
        "duration_s": d,
        "fsync": not args.no_fsync,
        "http2": args.http2,
        "runs": [dict(r, connections=k[1]) for k, r in runs.items()],
        "rounds": rounds,
        "sync_vs_proxy": statistics.median([one["ratios"]["sync"] for one in rounds]),
        "async_vs_proxy": statistics.median([one["ratios"]["async"] for one in rounds]),
        "sync_cpu_us": statistics.median([one["sync"]["cpu_us"] for one in rounds]),
        "async_cpu_us": statistics.median([one["async"]["cpu_us"] for one in rounds]),
        "sync_c1_overhead_p50_ms": runs[("sync", 1)]["p50_ms"] - direct1["p50_ms"],
        "proxy_c1_overhead_p50_ms": runs[("proxy", 1)]["p50_ms"] - direct1["p50_ms"],
    }
    if args.floor:
        result["floor_vs_proxy"] = statistics.median([one["ratios"]["floor"] for one in rounds])
        result["floor_c1_overhead_p50_ms"] = runs[("floor", 1)]["p50_ms"] - direct1["p50_ms"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"wrk -t1, {d} s per run, fsync {'on' if result['fsync'] else 'OFF'}"
          f"{', Keel to its no-op over h2c' if args.http2 else ''}; CPU per request of the middle process")
    print(f"{'path':8} {'conns':>5} {'per_s':>9} {'p50_ms':>7} {'p99_ms':>7} {'cpu_us':>7} {'x proxy':>7} {'idle%':>6}")
    for (path, conns), r in runs.items():
        ratio = r["per_s"] / runs[("proxy", conns)]["per_s"]
        cpu = f"{r['cpu_us']:7.1f}" if "cpu_us" in r else "      -"
        print(f"{path:8} {conns:>5} {r['per_s']:>9.0f} {r.get('p50_ms', 0):>7.3f} {r.get('p99_ms', 0):>7.3f} {cpu} "
              f"{ratio:>7.2f} {r['host_idle_pct']:>6.1f}")
    if len(rounds) > 1:
        print(f"\n{len(rounds)} rounds at {c} connections, each ratio to the proxy run of its own round:")
        print(f"{'round':>5} {'proxy/s':>8} {'sync/s':>8} {'x':>5} {'cpu_us':>6} {'async/s':>8} {'x':>5} {'cpu_us':>6}"
              + (f" {'floor x':>7}" if args.floor else ""))
        for i, one in enumerate(rounds, 1):
            print(f"{i:>5} {one['proxy']['per_s']:>8.0f} {one['sync']['per_s']:>8.0f} {one['ratios']['sync']:>5.2f} "
                  f"{one['sync']['cpu_us']:>6.1f} {one['async']['per_s']:>8.0f} {one['ratios']['async']:>5.2f} "
                  f"{one['async']['cpu_us']:>6.1f}" + (f" {one['ratios']['floor']:>7.2f}" if args.floor else ""))
        print(f"median: sync {result['sync_cpu_us']:.1f} us a call, async {result['async_cpu_us']:.1f} us an invocation\n")
    print(f"sync c=1 p50 overhead over direct: {result['sync_c1_overhead_p50_ms']:.3f} ms "
          f"(the nginx proxy adds {result['proxy_c1_overhead_p50_ms']:.3f} ms)")
    of = f" (medians of {len(rounds)} rounds)" if len(rounds) > 1 else ""
    print(f"sync = {result['sync_vs_proxy']:.2f} x proxy, async end to end = {result['async_vs_proxy']:.2f} x proxy{of}")
    if args.floor:
        print(f"floor = {result['floor_vs_proxy']:.2f} x proxy, its c=1 p50 overhead {result['floor_c1_overhead_p50_ms']:.3f} ms")


if __name__ == "__main__":
    main()
