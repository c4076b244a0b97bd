"""Compute and cache the proposals of many images with worker processes.

Images whose file already exists are skipped (files are written atomically, so an
existing file is complete): an interrupted run resumes where it stopped. A failing image
(missing, corrupt, ...) is reported with its reason and the run goes on with the rest.
Each worker runs OpenCV on one thread and ignores Ctrl-C; the parent stops the pool.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
from tqdm import tqdm

from proposals._io import read_image
from proposals.base import ProposalMethod
from proposals.cache import ProposalCache
from proposals.errors import ProposalError

ImageItem = tuple[str, "str | os.PathLike[str]"]  # (image_id, image path)


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
            "median_seconds_per_image": statistics.median(self.seconds) if self.seconds else None,
            "mean_boxes_per_image": statistics.fmean(self.boxes) if self.boxes else None,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def propose_one(method: ProposalMethod, cache: ProposalCache, image_id: str,
                path: str | os.PathLike[str]) -> Outcome:
    """Read one image, propose, write its file; any error becomes a failed ``Outcome``."""
    start = time.perf_counter()
    try:
        image = read_image(path)
        proposals = method(image)
        cache.save(image_id, proposals, image.shape[:2])
    except ProposalError as e:
        return Outcome(image_id, False, str(e))
    except Exception as e:  # noqa: BLE001 - one bad image must not stop the run
        return Outcome(image_id, False, f"{path}: {type(e).__name__}: {e}")
    return Outcome(image_id, True, n_boxes=len(proposals), seconds=time.perf_counter() - start)


_worker_state: dict[str, Any] = {}


def _init_worker(method: ProposalMethod, root: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _worker_state["method"] = method
    _worker_state["cache"] = ProposalCache(root)


def _work(item: tuple[str, str]) -> Outcome:
    return propose_one(_worker_state["method"], _worker_state["cache"], *item)


def _outcomes(method: ProposalMethod, cache: ProposalCache, todo: Sequence[tuple[str, str]],
              workers: int) -> Iterator[Outcome]:
    if workers <= 1 or len(todo) <= 1:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for image_id, path in todo:
                yield propose_one(method, cache, image_id, path)
        finally:
            cv2.setNumThreads(threads)
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(method, str(cache.root)))
    try:
        yield from pool.imap_unordered(_work, todo, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()  # Ctrl-C: finished files stay, half-written ones are temporary names
        raise
    finally:
        pool.join()


def run_proposals(
    method: ProposalMethod,
    items: Iterable[ImageItem],
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Cache ``method``'s proposals for every (image_id, path) in ``items`` under ``out_dir``.

    ``workers`` defaults to the number of CPU cores; 1 runs in this process. Raises
    ``CacheMismatchError`` before any work if ``out_dir`` holds another configuration.
    Workers are started with "spawn" (the same on every platform; no fork of a process
    that may hold threads), so a script calling this with workers > 1 needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    items = [(str(i), str(p)) for i, p in items]
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ProposalError(f"duplicate image ids: {', '.join(dup)}")
    cache = ProposalCache.create(out_dir, method.name, method.params)
    todo = [(i, p) for i, p in items if not cache.has(i)]
    summary = RunSummary(total=len(items), skipped=len(items) - len(todo))
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
