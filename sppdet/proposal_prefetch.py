"""Proposals in worker processes, computed ahead of the conv passes of a stream of images.

``prefetch(method, items, workers)`` takes (key, image) pairs in order and yields
(key, image, boxes_getter) in the same order, with the proposals of the next few images
already being computed by ``workers`` processes while the caller runs the conv layers on
the current one: on a 2-core machine, proposals on one core and the network on the other.
Every worker runs the same proposal method object (pickled to it) with OpenCV on one thread
(as ``sppdet proposals`` does), so the boxes equal a serial run's.

``prefetch_threaded(propose, items)`` does the same in one thread of this process (OpenCV
and torch release the GIL): no process start-up and no image copies, for one image as for a
stream; give torch one core fewer (``sppdet.cli.options.share_cores(1)``).

Imports no torch, and the workers start without the parent's ``__main__`` module where the
method does not need it: a spawned child normally runs the parent's main script or module
again (to unpickle objects defined there), and the ``sppdet`` command's and most scripts'
top-level imports load torch (1.2 s of CPU and a few hundred MB per worker here).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import types
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

import cv2
import numpy as np
from proposals.threads import opencv_threads

from sppdet.errors import ArgumentError, SppdetError

K = TypeVar("K")
_state: dict[str, Any] = {}


def _exit_with_parent(parent_pid: int, period: float = 1.0) -> None:
    """Worker thread: end this process once its parent is gone."""
    while True:
        time.sleep(period)
        if os.getppid() != parent_pid:
            os._exit(1)


def _init(method: Callable[[np.ndarray], Any], parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _state["method"] = method
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _propose(image_bgr: np.ndarray) -> np.ndarray:
    return np.asarray(_state["method"](image_bgr).boxes)


def propose_serial(method: Callable[[np.ndarray], Any], image_bgr: np.ndarray) -> np.ndarray:
    """The boxes of ``method`` on one image in this process, OpenCV on one thread (as in a worker)."""
    with opencv_threads(1):
        return np.asarray(method(image_bgr).boxes)


class WorkerDiedError(SppdetError):
    """A proposal worker process died (killed by the system, e.g. out of memory)."""


def prefetch(method: Callable[[np.ndarray], Any], items: Iterable[tuple[K, np.ndarray | None, bool]],
             workers: int, ahead: int | None = None
             ) -> Iterator[tuple[K, np.ndarray | None, Callable[[], np.ndarray | None]]]:
    """Yield (key, image, get_boxes) for every (key, image, wanted) of ``items``, in order,
    while ``workers`` processes compute the proposals of up to ``ahead`` (default
    2 x workers) images ahead. ``get_boxes()`` waits for that image's boxes; it returns None
    for an item with ``wanted`` False (no proposals computed: e.g. they are cached)."""
    if workers < 1:
        raise ArgumentError(f"workers must be >= 1, got {workers}")
    executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init,
                                   initargs=(method, os.getpid()))
    # Start every worker now (each submit to a pool without an idle worker spawns one), so
    # they warm up while the caller loads its first image, and without the parent's
    # __main__ when the method does not refer to it.
    with _main_module_hidden() if _pickles_without_main(method) else contextlib.nullcontext():
        for _ in range(workers):
            executor.submit(os.getpid)
    yield from _run_ahead(executor, _propose, items, max(1, 2 * workers if ahead is None else ahead),
                          "a proposal worker process died (killed by the system, e.g. out of "
                          "memory) while working on {key}; run again with fewer --workers")


def prefetch_threaded(propose: Callable[[np.ndarray], np.ndarray],
                      items: Iterable[tuple[K, np.ndarray | None, bool]], ahead: int = 2
                      ) -> Iterator[tuple[K, np.ndarray | None, Callable[[], np.ndarray | None]]]:
    """``prefetch`` with one thread of this process computing ``propose(image)`` for up to
    ``ahead`` images (the current one and the next): the caller's conv pass of an image runs
    beside its proposals. Same boxes as calling ``propose`` in order; an error raised by
    ``propose`` comes out of that image's ``get_boxes()``."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="sppdet-proposals")
    yield from _run_ahead(executor, propose, items, max(1, ahead), "")


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Processes spawned in this block do not run this process's ``__main__`` again.

    ``multiprocessing``'s spawn passes the main module's name or path to the child, which
    imports it before unpickling anything (objects defined in a script live there). An
    empty stand-in for ``sys.modules["__main__"]`` has neither, so the child skips that
    step. Only for objects that pickle without ``__main__`` (``_pickles_without_main``).
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _pickles_without_main(obj: Any) -> bool:
    """Whether ``obj`` pickles with ``__main__`` hidden (pickle looks every class and
    function up by module, so nothing in it is defined in the main script)."""
    with _main_module_hidden():
        try:
            pickle.dumps(obj)
        except Exception:  # noqa: BLE001 - any failure: let the children import __main__
            return False
    return True


def _run_ahead(executor: Executor, propose: Callable[[np.ndarray], Any],
               items: Iterable[tuple[K, np.ndarray | None, bool]], ahead: int, died: str
               ) -> Iterator[tuple[K, np.ndarray | None, Callable[[], np.ndarray | None]]]:
    """The queue shared by both prefetches: up to ``ahead`` items submitted to ``executor``;
    ``died`` is the message (with {key}) for a broken process pool."""
    pending: deque[tuple[K, np.ndarray | None, Future | None]] = deque()
    source = iter(items)

    def fill() -> None:
        while len(pending) < ahead:
            try:
                key, image, wanted = next(source)
            except StopIteration:
                return
            job = executor.submit(propose, image) if wanted and image is not None else None
            pending.append((key, image, job))

    def getter(key: K, future: Future | None) -> Callable[[], np.ndarray | None]:
        def get() -> np.ndarray | None:
            if future is None:
                return None
            try:
                return future.result()
            except BrokenProcessPool:
                raise WorkerDiedError(died.format(key=key)) from None
        return get

    finished = False
    try:
        fill()
        while pending:
            key, image, future = pending.popleft()
            fill()  # keep the workers busy while the caller works on this image
            yield key, image, getter(key, future)
        finished = True
    finally:
        # Every job done: wait for the workers to exit, so that no executor is left for the
        # interpreter's exit hook (CPython 3.11 can print "OSError: Bad file descriptor"
        # from it for an executor shut down without waiting). Stopped early (an error, an
        # interrupt, the caller stopped reading): cancel what is queued and return at once.
        executor.shutdown(wait=finished, cancel_futures=not finished)
