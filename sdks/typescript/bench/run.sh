#!/usr/bin/env bash
# The SDK adapter's own overhead per call: the same reply ({"ok":true,"attempt":1}, the JSON body
# parsed) from a bare node:http handler and from the SDK's createHandler, each in its own node
# process, loaded in turn by autocannon (50 keep-alive connections, a POST with the contract's
# headers). ROUNDS rounds (default 4), the order alternating; the server pinned to one CPU and
# autocannon to another when there are two. Prints each run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-10}
rounds=${ROUNDS:-4}
server_cpu=() client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then server_cpu=(taskset -c 1) client_cpu=(taskset -c 0); fi
headers=(-H 'content-type=application/json' -H 'keel-invocation-id=01JBENCH0000000000000000000' -H 'keel-attempt=1'
  -H 'keel-function=bench' -H 'keel-deadline=2030-01-01T00:00:00Z' -H 'idempotency-key=01JBENCH0000000000000000000'
  -H 'traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')
npx --yes autocannon@7 --version >/dev/null 2>&1
results=$(mktemp)
for round in $(seq "$rounds"); do
  order="bare sdk"; [ $((round % 2)) -eq 0 ] && order="sdk bare"
  for mode in $order; do
    port=$((18000 + RANDOM % 1000))
    cpu=$(mktemp)
    "${server_cpu[@]}" node bench/server.mjs "$mode" "$port" > "$cpu" & pid=$!
    sleep 0.5
    "${client_cpu[@]}" npx --yes autocannon@7 -c 50 -d "$duration" -m POST -b '{"user_id":"u1","email":"ada@example.com"}' \
      "${headers[@]}" --json "http://127.0.0.1:$port/" 2>/dev/null > "$cpu.json"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1] + ".json", "utf8"));
      const us = /([\d.]+) µs/.exec(require("fs").readFileSync(process.argv[1], "utf8"))?.[1] ?? "NaN";
      console.log(JSON.stringify({ mode: process.argv[2], rps: r.requests.average, mean: r.latency.average, p99: r.latency.p99, us: Number(us), errors: r.errors + r.non2xx }));
    ' "$cpu" "$mode" | tee -a "$results"
    rm -f "$cpu" "$cpu.json"
  done
done
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const of = (mode, k) => median(rows.filter((r) => r.mode === mode).map((r) => r[k]));
  for (const mode of ["bare", "sdk"]) console.log(`${mode}: median ${Math.round(of(mode, "rps"))} req/s, mean latency ${of(mode, "mean")} ms, p99 ${of(mode, "p99")} ms, ${of(mode, "us").toFixed(1)} µs CPU/request`);
  console.log(`sdk vs bare: ${(100 * (of("bare", "rps") / of("sdk", "rps") - 1)).toFixed(1)}% more time per request (throughput), ${(100 * (of("sdk", "us") / of("bare", "us") - 1)).toFixed(1)}% more CPU per request`);
' "$results"
rm -f "$results"
