"""The machine's cores for independent pieces of imaging work (a scan's links, its frames' filters).

Threads, not processes: the work is FFTs, OpenCV filters and numpy operations on whole frames,
which release the GIL, on arrays a process pool would have to copy. OpenBLAS is held to one
thread meanwhile. Its own threads win nothing on the refinement's small N × 6 least-squares
products and keep the other core spinning: measuring the 110 links of a 6×6 scan of 512 px frames
took 1.84 s serially either way, and 2.02 s on two threads with OpenBLAS threaded against 1.23 s
without (bench/bench_stitching.py --source synthetic has the whole stitch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["WORKERS", "parallel_map"]

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
