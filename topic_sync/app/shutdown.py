"""Stopping at a safe point on SIGTERM/SIGINT.

The first signal asks the work in flight to stop after its current batch (each
batch commits only after FCM answered, so nothing confirmed is lost and nothing
half-done is recorded); a second signal stops at once, as Python normally would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType


class Shutdown:
    def __init__(self) -> None:
        self.requested = threading.Event()

    def should_stop(self) -> bool:
        return self.requested.is_set()

    def sleep(self, seconds: float) -> None:
        """A sleep that ends early when a stop is requested."""
        self.requested.wait(max(seconds, 0.0))

    @contextlib.contextmanager
    def on_signals(self, notify: Callable[[str], None]) -> Iterator[Shutdown]:
        """Turn the first SIGTERM/SIGINT into a stop request (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            if self.requested.is_set():
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)
                return
            self.requested.set()
            notify(
                f"{signal.Signals(signum).name}: stopping after the current batch "
                "(send it again to stop at once)"
            )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


# The process's one shutdown state: the scheduler's signal handler and the run
# it is executing in a worker thread share it.
PROCESS = Shutdown()
