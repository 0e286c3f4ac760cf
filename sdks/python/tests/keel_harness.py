"""Starting a real ``keel serve`` for the end-to-end tests: ``$KEEL_BIN`` or ``<repo>/target/debug/keel``
with a temp config, on a free port, serving the functions of ``functions.py``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def keel_bin() -> Path:
    return Path(os.environ.get("KEEL_BIN") or REPO / "target" / "debug" / "keel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def function(name: str, *args: str, extra: str = "") -> str:
    command = ", ".join(f'"{a}"' for a in [sys.executable, str(HERE / "functions.py"), *args])
    return f"[functions.{name}]\ncommand = [{command}]\n{extra}\n"


RETRY = 'retry = { max_attempts = 3, initial = "100ms", max = "2s", jitter = "none" }'

FUNCTIONS = "".join(
    [
        function("echo", "echo", extra=RETRY),
        function("write", "write", extra=RETRY),
        function("count", "count", extra=RETRY),
        function("flaky", "flaky", extra=RETRY),
        function("reject", "reject", extra=RETRY),
        function("crash", "crash", extra=RETRY),
        function("on-event", "on-event", extra=RETRY),
        function("async-echo", "async-echo", extra=RETRY),
        function("wsgi-write", "wsgi", "write", extra=RETRY),
    ]
)

TOPICS = """
[topics."things.written"]
[topics."things.created"]

[[subscriptions]]
name = "things-seen"
topic = "things.created"
function = "on-event"
"""


@dataclass
class Keel:
    url: str
    home: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.home / "keel.log").read_text(errors="replace")[-4000:]


def create_key(home: Path, *scopes: str) -> str:
    """An API key made with ``keel keys create -c`` (the CLI writes to the store directly)."""
    args = [str(keel_bin()), "keys", "create", "-c", str(home / "keel.toml"), "--name", "py-tests", "--json"]
    for scope in scopes:
        args += ["--scope", scope]
    made = subprocess.run(args, capture_output=True, check=True, timeout=30)
    return str(json.loads(made.stdout)["secret"])


def write_config(home: Path, body: str) -> tuple[Path, int]:
    port = free_port()
    config = home / "keel.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "2s"\n\n'
        f'[storage]\nurl = "sqlite://{home}/keel.db"\n\n{body}'
    )
    return config, port


def start_keel(home: Path, body: str | None = None) -> Keel:
    binary = keel_bin()
    if not binary.exists():
        pytest.skip(f"no keel binary at {binary} (set KEEL_BIN)")
    config = home / "keel.toml"
    if body is not None or not config.exists():
        write_config(home, FUNCTIONS + TOPICS if body is None else body)
    port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
    log = open(home / "keel.log", "ab")  # noqa: SIM115 - kept open for the process
    process = subprocess.Popen(
        [str(binary), "serve", "-c", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    keel = Keel(f"http://127.0.0.1:{port}", home, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"keel exited early ({process.returncode}):\n{keel.log()}")
        try:
            with urllib.request.urlopen(f"{keel.url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return keel
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"keel not ready within 30 s:\n{keel.log()}")
        time.sleep(0.1)


def stop_keel(keel: Keel) -> None:
    keel.process.terminate()
    try:
        keel.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        keel.process.kill()
        keel.process.wait()
