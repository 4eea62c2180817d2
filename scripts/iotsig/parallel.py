"""Run independent jobs on every core, with progress reported back from the workers."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .errors import ToolError

_progress_queue = None


def _worker_init(progress_queue):
    global _progress_queue
    _progress_queue = progress_queue
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from .cli import _raise_terminated
    signal.signal(signal.SIGTERM, _raise_terminated)


def _report(count: int) -> None:
    _progress_queue.put(count)


def _call(function, arguments):
    try:
        return function(*arguments, on_packets=_report)
    except ToolError as e:
        return e


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_parallel(tasks, jobs: int = 0, on_progress=None):
    """tasks: [(function, args)], each function taking on_packets=. Yields (first arg,
    result or ToolError) in completion order."""
    jobs = min(jobs or cores(), len(tasks)) or 1
    if jobs == 1:
        for function, arguments in tasks:
            try:
                yield arguments[0], function(*arguments, on_packets=on_progress)
            except ToolError as e:
                yield arguments[0], e
        return
    context = multiprocessing.get_context("fork")
    progress_queue = context.Queue()
    executor = ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                                   initargs=(progress_queue,))
    try:
        pending = {executor.submit(_call, f, a): a[0] for f, a in tasks}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, on_progress)
            for future in done:
                yield pending.pop(future), future.result()
        _drain(progress_queue, on_progress)
    except BaseException:
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()  # workers remove their unfinished files on SIGTERM
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _drain(progress_queue, on_progress):
    while True:
        try:
            count = progress_queue.get_nowait()
        except queue.Empty:
            return
        if on_progress:
            on_progress(count)
