"""The machine's cores for independent pieces of imaging work (a scan's links, its frames' filters).

Threads, not processes: the work is FFTs, OpenCV filters and numpy operations on whole frames,
which release the GIL, on arrays a process pool would have to copy. OpenBLAS is held to one
thread meanwhile. Its own threads win nothing on the refinement's small N × 6 least-squares
products and keep the other core spinning: measuring the 110 links of a 6×6 scan of 512 px frames
took 1.84 s serially either way, and 2.02 s on two threads with OpenBLAS threaded against 1.23 s
without (bench/bench_stitching.py --source synthetic has the whole stitch).

A process (:class:`Forked`) for work on small arrays, whose Python between the numpy calls the GIL
would serialise (the joint inference's message passing: two runs on two threads took as long as one
after the other), and which a forked child finds in its memory without a copy.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["WORKERS", "parallel_map", "Forked", "forks"]

#: Threads for a batch of work; 4 at most, past which a lab PC's memory bandwidth, not its cores,
#: bounds FFTs of whole frames.
WORKERS = max(1, min(4, os.cpu_count() or 1))

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, in order, on up to ``workers`` threads (default :data:`WORKERS`).

    ``fn`` must not change state the other calls read. The first exception raised is raised
    here. One item or one worker runs inline, with no pool.
    """
    items = list(items)
    workers = WORKERS if workers is None else max(1, int(workers))
    if workers < 2 or len(items) < 2:
        return [fn(x) for x in items]
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def forks() -> bool:
    """Whether :class:`Forked` begins its call in a child here: on Linux, with two cores or more,
    outside a daemonic process (which may have none)."""
    return WORKERS >= 2 and sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


class Forked:
    """``fn()`` begun at once in a forked child process, on another core, while this one goes on.

    Its answer comes back pickled through a pipe; None where no child could be forked (one core,
    not Linux, inside a daemonic process, out of processes or memory), where it failed, or where it
    has not answered within the time given (a child that inherited a lock another thread held at the
    fork never will): the caller then runs ``fn()`` itself. End it with :meth:`result` or :meth:`cancel`.
    """

    def __init__(self, fn: Callable[[], R]):
        self.process = None
        if not forks():
            return
        context = multiprocessing.get_context("fork")
        self.receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_send_result, args=(fn, send), daemon=True)
        try:
            process.start()
            self.process = process
        except OSError:
            self.receive.close()
        finally:
            send.close()

    def result(self, timeout_s: float):
        """What ``fn()`` returned, or None (see the class)."""
        if self.process is None:
            return None
        try:
            answer = self.receive.recv() if self.receive.poll(timeout_s) else None
        except EOFError:  # the child died
            answer = None
        self.cancel()
        return answer

    def cancel(self) -> None:
        """Ends the child, whatever it is doing."""
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.receive.close()
            self.process = None


def _send_result(fn, send) -> None:
    send.send(fn())
    send.close()
