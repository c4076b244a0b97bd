"""Compute and cache the proposals of many images with worker processes.

Images whose file already exists and is complete are skipped (files are written
atomically; a damaged one, e.g. cut short by a full disk, is reported and recomputed): an
interrupted run resumes where it stopped. A failing image
(missing, corrupt, ...) is reported with its reason and the run goes on with the rest.
Each worker runs OpenCV on one thread and ignores Ctrl-C; the parent stops the pool. A
worker that dies (killed for memory, say) ends the run with ``WorkerDiedError`` naming the
images left; a worker whose parent dies exits within a second.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
from tqdm import tqdm

from proposals.images import read_image
from proposals.base import ProposalMethod
from proposals.cache import ProposalCache
from proposals.errors import ProposalError, WorkerDiedError
from proposals.threads import opencv_threads

# (image_id, image path) or (image_id, image path, (width, height) the image must have)
ImageItem = tuple


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    image_id: str
    ok: bool
    reason: str = ""
    n_boxes: int = 0
    seconds: float = 0.0


@dataclass
class RunSummary:
    """Counts and failures of one run."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # found damaged, recomputed
    seconds: list[float] = field(default_factory=list)
    boxes: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.done += 1
            self.seconds.append(outcome.seconds)
            self.boxes.append(outcome.n_boxes)
        else:
            self.failed.append((outcome.image_id, outcome.reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "failures": [{"image_id": i, "reason": r} for i, r in self.failed],
            "damaged": [{"image_id": i, "reason": r} for i, r in self.damaged],
            "median_seconds_per_image": statistics.median(self.seconds) if self.seconds else None,
            "mean_boxes_per_image": statistics.fmean(self.boxes) if self.boxes else None,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def propose_one(method: ProposalMethod, cache: ProposalCache, image_id: str,
                path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None) -> Outcome:
    """Read one image, propose, write its file; any error becomes a failed ``Outcome``."""
    start = time.perf_counter()
    try:
        image = read_image(path, expected_size)
        proposals = method(image)
        cache.save(image_id, proposals, image.shape[:2])
    except ProposalError as e:
        return Outcome(image_id, False, str(e))
    except Exception as e:  # noqa: BLE001 - one bad image must not stop the run
        return Outcome(image_id, False, f"{path}: {type(e).__name__}: {e}")
    return Outcome(image_id, True, n_boxes=len(proposals), seconds=time.perf_counter() - start)


_worker_state: dict[str, Any] = {}
MAX_NAMED_LEFT = 10


def _exit_with_parent(parent_pid: int, period: float = 1.0) -> None:
    """Worker thread: end this process once its parent is gone (killed with -9, say)."""
    while True:
        time.sleep(period)
        if os.getppid() != parent_pid:
            os._exit(1)


def _init_worker(method: ProposalMethod, root: str, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _worker_state["method"] = method
    _worker_state["cache"] = ProposalCache(root)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _work(item: tuple) -> Outcome:
    return propose_one(_worker_state["method"], _worker_state["cache"], *item)


def _worker_died(left: Sequence[str]) -> WorkerDiedError:
    named = ", ".join(left[:MAX_NAMED_LEFT]) + (f" and {len(left) - MAX_NAMED_LEFT} more"
                                                if len(left) > MAX_NAMED_LEFT else "")
    return WorkerDiedError(
        f"a proposal worker process died (killed by the system, e.g. out of memory); "
        f"{len(left)} images were not done: {named}. The finished images are cached: run the "
        f"same command again to do the rest (with fewer --workers or a smaller --max-side if "
        f"memory ran out)")


def _outcomes(method: ProposalMethod, cache: ProposalCache, todo: Sequence[tuple],
              workers: int) -> Iterator[Outcome]:
    if workers <= 1 or len(todo) <= 1:
        with opencv_threads(1):
            for item in todo:
                yield propose_one(method, cache, *item)
        return
    # concurrent.futures notices a worker that dies (multiprocessing.Pool would wait forever
    # for its task); a few tasks per worker are queued at a time, so stopping is quick.
    n = min(workers, len(todo))
    executor = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(method, str(cache.root), os.getpid()))
    queue = iter(todo)
    running: dict[Future, str] = {}
    broken = False
    try:
        while not broken:
            for item in itertools.islice(queue, 2 * n - len(running)):
                running[executor.submit(_work, item)] = item[0]
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken = True
                    break
                yield outcome
    except BaseException:
        _stop(executor)  # Ctrl-C: finished files stay, half-written ones are temporary names
        raise
    if broken:
        _stop(executor)
        raise _worker_died([item[0] for item in todo if not cache.has(item[0])])
    executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop every worker now (tasks in progress are lost; their files were never renamed)."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


def run_proposals(
    method: ProposalMethod,
    items: Iterable[ImageItem],
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: bool = True,
    cache: ProposalCache | None = None,
) -> RunSummary:
    """Cache ``method``'s proposals for every (image_id, path) in ``items`` under ``out_dir``;
    an item (image_id, path, (width, height)) also requires that size (an annotation's).

    ``workers`` defaults to the number of CPU cores; 1 runs in this process. Raises
    ``CacheMismatchError`` before any work if ``out_dir`` holds another configuration.
    Workers are started with "spawn" (the same on every platform; no fork of a process
    that may hold threads), so a script calling this with workers > 1 needs the usual
    ``if __name__ == "__main__":`` guard. ``cache`` is ``out_dir`` already opened by
    ``ProposalCache.create`` for this method (a sharded run: one process opens the folder,
    which also removes stale temporary files, before any process writes into it).
    """
    items = [(str(x[0]), str(x[1]), tuple(x[2]) if len(x) > 2 and x[2] is not None else None)
             for x in items]
    ids = [x[0] for x in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ProposalError(f"duplicate image ids: {', '.join(dup)}")
    if cache is None:
        cache = ProposalCache.create(out_dir, method.name, method.params)
    todo, damaged = [], []
    for item in items:
        problem = cache.problem(item[0]) if cache.has(item[0]) else ""
        if problem is None:
            continue  # complete: skipped
        if problem:
            damaged.append((item[0], f"{cache.path(item[0])}: {problem}"))
        todo.append(item)
    summary = RunSummary(total=len(items), skipped=len(items) - len(todo), damaged=damaged)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"proposals {method.name}", unit="img", disable=not progress,
               dynamic_ncols=True)
    try:
        for outcome in _outcomes(method, cache, todo, workers):
            summary.add(outcome)
            bar.update(1)
            if summary.failed:
                bar.set_postfix(failed=len(summary.failed), refresh=False)
    finally:
        bar.close()
        summary.wall_seconds = time.perf_counter() - start
    return summary
