#!/usr/bin/env bash
# Two regions on one machine, active-passive, to try failover by hand:
#
#   eu  PostgreSQL primary on :55432, Keel nodes on :7801 and :7802 (role = "primary")
#   us  PostgreSQL streaming replica on :55433 (synchronous; ASYNC=1 for asynchronous),
#       Keel nodes on :7811 and :7812 (role = "standby")
#
# Each region's nodes run the same `hello` function (a tiny built-in HTTP no-op on :7899).
# Needs PostgreSQL's server binaries (Debian: `apt-get install postgresql`) and a built keel
# (KEEL=path/to/keel, default: target/debug/keel, built if missing). Runs in the foreground;
# Ctrl-C stops everything and removes the data (under a temporary directory).
#
# Things to try (printed again at start):
#   curl -s -XPOST localhost:7801/v1/functions/hello/invocations -d '{}'    # admitted in eu
#   curl -s localhost:7811/v1/region                                          # us: standby, epoch 1
#   curl -s -XPOST localhost:7811/v1/functions/hello/invocations -d '{}'    # 503 standby, names eu
#   kill the eu nodes (or stop eu's PostgreSQL), then:
#   $KEEL region promote -c $DIR/us.toml                                      # us: active, epoch 2
#   start an eu node again: it answers 503 fenced and runs nothing
set -euo pipefail
cd "$(dirname "$0")/../.."

KEEL=${KEEL:-$PWD/target/debug/keel}
if [[ ! -x "$KEEL" ]]; then
    cargo build -p keel-server --bin keel
fi
KEEL=$(realpath "$KEEL")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n "$bin" && -x "$bin/initdb" ]] || bin=$(dirname "$(command -v initdb || true)")
[[ -x "$bin/initdb" ]] || { echo "two-regions: no initdb (apt-get install postgresql)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/keel-regions-XXXXXX)
chmod 755 "$DIR"
# PostgreSQL refuses to run as root: as root, its clusters run as the postgres user.
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_pg "$bin/pg_ctl" -D "$DIR/pg-us" -m immediate stop >/dev/null 2>&1 || true
    as_pg "$bin/pg_ctl" -D "$DIR/pg-eu" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] && chown postgres "$DIR"
echo "== eu: PostgreSQL primary on :55432"
as_pg "$bin/initdb" -D "$DIR/pg-eu" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$DIR/pg-eu" -l "$DIR/pg-eu.log" -w -o "-p 55432 -h 127.0.0.1 -k $DIR" start >/dev/null
as_pg "$bin/psql" -h 127.0.0.1 -p 55432 -U postgres -qc "CREATE DATABASE keel"
echo "== us: streaming replica of eu on :55433 (pg_basebackup -R)"
as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p 55432 -U postgres -D "$DIR/pg-us" -R -X stream -c fast
as_pg "$bin/pg_ctl" -D "$DIR/pg-us" -l "$DIR/pg-us.log" -w -o "-p 55433 -h 127.0.0.1 -k $DIR" start >/dev/null
if [[ -z "${ASYNC:-}" ]]; then
    echo "== synchronous replication: a commit in eu waits until us has it (ASYNC=1 to turn off)"
    as_pg "$bin/psql" -h 127.0.0.1 -p 55432 -U postgres -qc "ALTER SYSTEM SET synchronous_standby_names = '*'"
    as_pg "$bin/psql" -h 127.0.0.1 -p 55432 -U postgres -qc "SELECT pg_reload_conf()" >/dev/null
fi

# The function both regions call: a no-op answering 200 to every POST.
python3 - <<'PY' &
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"hello":"world"}'
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 7899), H).serve_forever()
PY
pids+=($!)

region_config() { # name role pg_port peer peer_url
    cat > "$DIR/$1.toml" <<TOML
[storage]
url = "postgres://postgres@127.0.0.1:$3/keel"

[region]
name = "$1"
role = "$2"
peers = { $4 = "$5" }

[functions.hello]
url = "http://127.0.0.1:7899/hello"
TOML
}
region_config eu primary 55432 us http://127.0.0.1:7811
region_config us standby 55433 eu http://127.0.0.1:7801

start_node() { # config port
    "$KEEL" serve -c "$DIR/$1.toml" --listen "127.0.0.1:$2" >"$DIR/$1-$2.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl -sf "localhost:$2/readyz" >/dev/null && return; sleep 0.1; done
    echo "keel on :$2 did not start; see $DIR/$1-$2.log" >&2; exit 1
}
echo "== eu: Keel on :7801 and :7802"
start_node eu 7801
start_node eu 7802
echo "== us: Keel on :7811 and :7812 (standby: reads only)"
start_node us 7811
start_node us 7812

cat <<EOF

Two regions are up (configs and logs in $DIR).
  curl -s -XPOST localhost:7801/v1/functions/hello/invocations -d '{}'   # admitted in eu
  curl -s localhost:7811/v1/region                                         # us: standby
  curl -s -XPOST localhost:7811/v1/functions/hello/invocations -d '{}'   # 503 standby, names eu
Fail over: stop eu (kill ${pids[*]:1:2}, or: $bin/pg_ctl -D $DIR/pg-eu -m immediate stop), then
  $KEEL region promote -c $DIR/us.toml
and us admits within a second. Ctrl-C stops everything.
EOF
wait
