"""pmap: a function over items, N at a time in spawned processes, one GPU each where there are several."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import signal
import threading

import torch

__all__ = ["pmap"]


def _claim_slot(slots, threads: int, gpus: int) -> None:
    """Worker start: one slot per worker; with several GPUs each worker gets its own."""
    slot = slots.get()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # N kernels share the cores, not each all of them
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))   # work run in the worker itself (tuning runs) too
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count()
    except Exception:
        return 0


@contextlib.contextmanager
def _workers_end_with_us():
    """`kill PID` sends SIGTERM to this process alone, which would die and leave its workers running
    their notebooks to the end. Here SIGTERM ends the workers too (each kernel quits when its worker is
    gone: ipykernel watches its parent), then this process, as Ctrl-C ends the whole group."""
    if threading.current_thread() is not threading.main_thread():   # only the main thread may set handlers
        yield
        return

    def end(signum, frame):
        for child in mp.active_children():
            child.terminate()
        raise SystemExit(128 + signum)
    before = signal.signal(signal.SIGTERM, end)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def pmap(fn, items: list, jobs: int, on_result=None) -> list:
    """fn over items, `jobs` at a time (in this process when jobs == 1); results in item order."""
    results = [None] * len(items)
    if jobs <= 1 or len(items) <= 1:
        for i, it in enumerate(items):
            results[i] = fn(*it)
            if on_result:
                on_result(results[i])
        return results
    ctx = mp.get_context("spawn")  # papermill / zmq / torch state does not survive fork well
    slots = ctx.Manager().Queue()
    for s in range(jobs):
        slots.put(s)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with _workers_end_with_us(), cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_claim_slot,
                                                         initargs=(slots, threads, _gpu_count())) as pool:
        futures = {pool.submit(fn, *it): i for i, it in enumerate(items)}
        for f in cf.as_completed(futures):
            results[futures[f]] = f.result()
            if on_result:
                on_result(results[futures[f]])
    return results
