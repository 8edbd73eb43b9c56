"""A storm of TLS handshakes at a leader: how long does ``/healthz`` wait meanwhile?

A real leader over TLS (``farm leader --tls-cert --tls-key``, a self-signed
RSA-2048 certificate made with openssl). Once it answers, a probe process asks
``GET /healthz`` every 5 ms on one kept-alive TLS connection, and a storm
process opens ``--handshakes`` TLS connections at once, each asking
``/healthz`` once. Reported per run: the storm's time until every connection
was answered, the probe's latencies during it (p50, p99, max), and the
leader's watchdog lines (stalls over 100 ms).

``--tree`` (repeatable) runs the leader from other copies of the code (a
``git archive`` of another commit), alternating with each other run by run,
so that they see the same machine:

    python bench/tls_storm.py --runs 5 --tree /tmp/old --tree .
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers.tls import self_signed_certificate  # noqa: E402

# The leader from a given tree, whatever farmtui is installed (an editable install's
# finder would otherwise import this checkout's code).
LEADER = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv.pop(1))
from farmtui.cli import main
sys.exit(main())
"""

# Asks /healthz every 5 ms on a kept connection (a process of its own).
PROBE = REPO / "bench" / "healthz_probe.py"

STORM = """
import asyncio, json, ssl, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
async def one():
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context), 60)
        writer.write(b"GET /healthz HTTP/1.1\\r\\nhost: farm\\r\\n\\r\\n")
        line = await asyncio.wait_for(reader.readline(), 60)
        writer.close()
        return b" 200 " in line
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return False
async def main():
    began = time.perf_counter()
    answered = sum(await asyncio.gather(*(one() for _ in range(count))))
    print(json.dumps({"seconds": time.perf_counter() - began, "answered": answered}))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int, within: float = 30.0) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            with raw, context.wrap_socket(raw) as link:
                link.sendall(b"GET /healthz HTTP/1.1\r\nhost: farm\r\n\r\n")
                if b" 200 " in link.recv(65536):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the leader did not answer /healthz")


def one_run(tree: Path, handshakes: int, tls: tuple[Path, Path], tmp: Path) -> dict[str, Any]:
    port = free_port()
    data, root, log = tmp / f"data-{port}", tmp / f"root-{port}", tmp / f"leader-{port}.log"
    args = [sys.executable, "-c", LEADER, str(tree), "leader", "--data", str(data)]
    args += ["--root", str(root), "--port", str(port)]
    args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    with log.open("wb") as out:
        leader = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        healthy(port)
        # The probe runs a little longer than the storm may take on this machine.
        probe = subprocess.Popen(
            [sys.executable, str(PROBE), str(port), str(2.0 + handshakes / 300), "--tls"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None
        probe.stdout.readline()  # "ready": connected and handshaken
        storm = subprocess.run(
            [sys.executable, "-c", STORM, str(port), str(handshakes)],
            capture_output=True,
            text=True,
            check=True,
        )
        latencies = json.loads(probe.communicate(timeout=120)[0])
    finally:
        leader.send_signal(signal.SIGTERM)
        leader.wait(timeout=30)
    stalls = [int(ms) for ms in re.findall(r"stalled for (\d+) ms", log.read_text())]
    latencies.sort()
    return {
        **json.loads(storm.stdout),
        "probe_p50": latencies[len(latencies) // 2],
        "probe_p99": latencies[int(len(latencies) * 0.99)],
        "probe_max": latencies[-1],
        "stalls": len(stalls),
        "stall_max_ms": max(stalls, default=None),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=1500)
    parser.add_argument("--tree", type=Path, action="append", help="default: this checkout")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tls_storm.json")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        print("needs openssl to make a certificate", file=sys.stderr)
        return 1
    trees = [tree.resolve() for tree in args.tree or [REPO]]
    results: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory(prefix="tls-storm-") as folder:
        tmp = Path(folder)
        tls = self_signed_certificate(tmp)
        for run in range(1, args.runs + 1):
            for tree in trees:
                record = one_run(tree, args.handshakes, tls, tmp)
                results[tree].append(record)
                print(
                    f"run {run} {tree}: {record['answered']}/{args.handshakes} answered in "
                    f"{record['seconds']:.2f} s; /healthz p50 {record['probe_p50'] * 1e3:.1f} "
                    f"p99 {record['probe_p99'] * 1e3:.1f} max {record['probe_max'] * 1e3:.1f} ms; "
                    f"stalls over 100 ms {record['stalls']} (longest {record['stall_max_ms']} ms)",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({str(tree): runs for tree, runs in results.items()}, indent=2))
    print(f"\nmedians of {args.runs} runs, {args.handshakes} TLS handshakes at once:")
    for tree, records in results.items():
        keys = [key for key in records[0] if key != "stall_max_ms"]
        median = {key: statistics.median(r[key] for r in records) for key in keys}
        print(
            f"  {tree}: storm {median['seconds']:.2f} s; /healthz p50 "
            f"{median['probe_p50'] * 1e3:.1f} p99 {median['probe_p99'] * 1e3:.1f} "
            f"max {median['probe_max'] * 1e3:.1f} ms; stalls {median['stalls']:g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
