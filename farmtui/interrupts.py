"""A Ctrl-C held back while modules that build msgspec types load, then delivered.

msgspec (0.23 here) can crash the interpreter (SIGSEGV, exit -11) when a
KeyboardInterrupt lands while it builds a decoder's type information for the
first time: a Ctrl-C 45-68 ms into `farm jobs` crashed it 19 times in 300,
always in ``farmtui.protocol``'s decoders. So the CLI blocks SIGINT while its
commands' modules load; a Ctrl-C meanwhile is delivered the moment they have
(a quiet exit 130, as during the command).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT blocked inside (main thread only: where Python runs its handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
