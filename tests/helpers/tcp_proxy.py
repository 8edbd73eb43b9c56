"""A TCP proxy on loopback whose link can be cut and put back: a network partition.

    with TcpProxy("127.0.0.1", 5432) as proxy:     # listens on proxy.port
        ...                                        # connect to 127.0.0.1:proxy.port
        proxy.cut()       # every connection through it closed, new ones refused
        proxy.blackhole() # ... or new ones accepted and never answered (packets dropped)
        proxy.restore()   # accepted again, on the same port
        proxy.restore(accept=1)  # ... the next one only, then refused again
        proxy.freeze_on(b"SELECT")  # once a client sends that, nothing is forwarded:
                                    # a server frozen (SIGSTOP) with its links open

Threads, one per direction of each connection: a test's proxy carries a few.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._links: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._trigger: bytes | None = None
        self.frozen = threading.Event()

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def restore(self, accept: int | None = None) -> None:
        """Accept connections again (on the same port); ``accept``: only that many, then
        refuse new ones (those accepted go on): a link that comes back for a moment."""
        self.cut()
        self._listener = self._listen()
        self._start(self._accept, self._listener, accept)

    def freeze_on(self, trigger: bytes) -> None:
        """Once a client sends ``trigger``, forward nothing more either way (the bytes are
        read and kept back) until ``cut`` or ``restore``: every link open, none answered."""
        self._trigger = trigger

    def blackhole(self) -> None:
        """Cut, then take connections and never answer: a link whose packets are dropped,
        where a client waits for its own timeout rather than being refused at once."""
        self.cut()
        self._listener = self._listen()  # the kernel completes handshakes; nobody reads

    def _listen(self) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        return listener

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones."""
        self._trigger = None
        self.frozen.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            links, self._links = self._links, set()
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            link.close()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, most: int | None) -> None:
        while most is None or most > 0:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if most is not None:
                most -= 1
            try:
                server = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._links.update((client, server))
            self._start(self._pump, client, server, True)
            self._start(self._pump, server, client, False)
        with self._lock:  # as many as asked: new ones are refused
            if self._listener is listener:
                self._listener = None
                listener.close()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                trigger = self._trigger
                if from_client and trigger is not None and trigger in data:
                    self.frozen.set()
                if self.frozen.is_set():
                    continue  # read and kept back, as a frozen server's kernel does
                sink.sendall(data)
        if self.frozen.is_set():
            return  # a frozen server closes nothing: its timeouts do not run either
        for side in (source, sink):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
