"""Ask a leader's ``/healthz`` every 5 ms on one kept-alive connection; print the latencies.

    python bench/healthz_probe.py PORT SECONDS [--tls]

Prints ``ready`` once connected (and, with ``--tls``, handshaken), then, after
SECONDS, the latencies in seconds as one JSON list. Run as a process of its own
by the benchmarks (``full_disk.py``, ``tls_storm.py``), so that its timing does
not share the benchmark's interpreter.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    link = socket.create_connection(("127.0.0.1", port))
    if "--tls" in sys.argv[3:]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        link = context.wrap_socket(link)
    print("ready", flush=True)
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.perf_counter()
        link.sendall(b"GET /healthz HTTP/1.1\r\nhost: farm\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += link.recv(65536)
        latencies.append(time.perf_counter() - began)
        time.sleep(0.005)  # the probe's pace, not a wait for a condition
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main()
