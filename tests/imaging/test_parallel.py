"""parallel_map: the results of a serial map, in order, on threads that really overlap; Forked: a call
begun in a child process, its answer or None."""

import functools
import os
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from imaging import parallel
from imaging.parallel import Forked, parallel_map


def test_results_come_back_in_the_order_of_the_items():
    # later items finish first
    assert parallel_map(lambda k: (time.sleep(0.02 * (5 - k)), k * k)[1], range(5), workers=3) == [0, 1, 4, 9, 16]


def test_calls_overlap_on_several_workers():
    running, most = [0], [0]
    lock = threading.Lock()

    def work(_):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    parallel_map(work, range(4), workers=2)
    assert most[0] == 2


def test_one_worker_or_one_item_runs_inline():
    caller = threading.get_ident()
    assert parallel_map(lambda _: threading.get_ident(), range(3), workers=1) == [caller] * 3
    assert parallel_map(lambda _: threading.get_ident(), [0], workers=4) == [caller]
    assert parallel_map(lambda x: x, [], workers=4) == []


def test_an_exception_in_one_call_is_raised_to_the_caller():
    def work(k):
        if k == 2:
            raise ValueError("frame 2 is blank")
        return k

    with pytest.raises(ValueError, match="frame 2 is blank"):
        parallel_map(work, range(4), workers=2)


def test_blas_runs_on_one_thread_inside_and_as_before_after():
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert before  # numpy's OpenBLAS
    inside = parallel_map(lambda _: [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"],
                          range(2), workers=2)
    assert all(threads == [1] * len(before) for threads in inside)
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
    np.linalg.solve(np.eye(3), np.ones(3))  # BLAS still usable


forking = pytest.mark.skipif(not parallel.forks(), reason="Forked forks on Linux with two cores or more only")


@forking
def test_a_forked_call_answers_from_another_process():
    assert Forked(os.getpid).result(timeout_s=30) not in (None, os.getpid())


@forking
def test_a_forked_call_that_does_not_answer_in_time_or_dies_is_given_up():
    stuck = Forked(functools.partial(time.sleep, 60))
    began = time.perf_counter()
    assert stuck.result(timeout_s=0.3) is None
    assert time.perf_counter() - began < 10 and stuck.process is None  # killed, not waited for
    assert Forked(functools.partial(os._exit, 3)).result(timeout_s=30) is None


def test_without_a_second_core_nothing_is_forked(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 1)
    call = Forked(os.getpid)
    assert call.process is None and call.result(timeout_s=1) is None
