"""Sharded runs under ``torchrun``: which share of the images this process does, and the
few collective steps a sharded command needs (a barrier, rank 0 first, gathering results).

A command started by ``torchrun --nproc-per-node N [--nnodes M ...] -m sppdet ...`` finds
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment; with ``WORLD_SIZE > 1`` it
joins the process group (gloo on CPU; NCCL for CUDA tensors plus gloo for CPU ones when the
device is CUDA) and works on its share of the images. A plain run (no such variables, or
``WORLD_SIZE=1``) never touches ``torch.distributed`` and behaves as before.

The work itself needs no communication: each rank writes its own per-image files. Only
small JSON documents travel between ranks (rank 0's decision before the work, and each
rank's summary or detections after it), as UTF-8 bytes in uint8 tensors: nothing received
from another process is unpickled.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sppdet.errors import SppdetError

T = TypeVar("T")

#: How long a rank waits for the others at a barrier (a rank that finished its share
#: waits there for the slowest one), far above any one image's work.
TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a sharded run (rank 0 of 1 in a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every ``world_size``-th one from position ``rank``.

        Deterministic, depends only on the list and the rank count, and balanced to one
        item; callers pass the list of images still to do (the same on every rank).
        """
        return list(items[self.rank::self.world_size])

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}" if self.sharded else "one process"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SppdetError(f"environment variable {name}={value!r} is not an integer "
                          f"(set by torchrun for sharded runs)") from None


def ranks_from_env() -> Ranks:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (0, 1, 0 if unset)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise SppdetError(f"inconsistent RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Ranks(rank, world, local)


def refuse_sharded(command: str) -> None:
    """Stop a command that is not sharded when it was started with several ranks (every
    rank would do all the work and write the same files)."""
    ranks = ranks_from_env()
    if ranks.sharded:
        raise SppdetError(f"{command} is not sharded (WORLD_SIZE={ranks.world_size}): run it as one "
                          f"process, without torchrun; docs/large_datasets.md says why")


def rank_device(device: str | None, ranks: Ranks) -> str | None:
    """In a sharded run, ``cuda`` (or no choice, with CUDA present) means ``cuda:LOCAL_RANK``."""
    if not ranks.sharded:
        return device
    import torch

    if device == "cuda" or (device is None and torch.cuda.is_available()):
        return f"cuda:{ranks.local_rank}"
    return device


@contextlib.contextmanager
def sharded_run(device: str | None = None) -> Iterator[Ranks]:
    """Join the process group for the length of a command when started by torchrun with
    several ranks; yield this process's :class:`Ranks` (``Ranks()`` in a plain run)."""
    ranks = ranks_from_env()
    if not ranks.sharded:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # called from a program that set the group up itself
        yield ranks
        return
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise SppdetError(f"WORLD_SIZE={ranks.world_size} but {name} is not set: start sharded "
                              f"runs with torchrun (see docs/large_datasets.md)")
    cuda = (rank_device(device, ranks) or "cpu").startswith("cuda")
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here (nothing in a plain run)."""
    if ranks.sharded:
        import torch.distributed as dist

        dist.barrier()


def _to_tensor(obj: Any) -> Any:
    import torch

    data = json.dumps(obj, separators=(",", ":")).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def all_gather_json(ranks: Ranks, obj: Any) -> list[Any]:
    """Every rank's JSON-serialisable ``obj``, in rank order, on every rank."""
    if not ranks.sharded:
        return [json.loads(json.dumps(obj))]
    import torch
    import torch.distributed as dist

    payload = _to_tensor(obj)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.int64))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: payload.numel()] = payload
    chunks = [torch.zeros(longest, dtype=torch.uint8) for _ in range(ranks.world_size)]
    dist.all_gather(chunks, padded)
    return [json.loads(bytes(c[: int(n)].numpy()).decode()) for c, n in zip(chunks, sizes)]


def broadcast_json(ranks: Ranks, obj: Any) -> Any:
    """Rank 0's JSON-serialisable ``obj`` on every rank (the others pass anything)."""
    return all_gather_json(ranks, obj if ranks.is_main else None)[0]


def main_first(ranks: Ranks, action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 only, then let every rank go on: if it raised a
    ``SppdetError``, every rank raises one with the same message (so no rank waits for
    work that will not come). Returns the action's result on rank 0, None elsewhere."""
    if not ranks.sharded:
        return action()
    result: T | None = None
    error = None
    if ranks.is_main:
        try:
            result = action()
        except SppdetError as e:
            error = [type(e).__name__, str(e)]
    error = broadcast_json(ranks, error)
    if error is not None:
        from sppdet import errors

        cls = getattr(errors, error[0], SppdetError)
        cls = cls if isinstance(cls, type) and issubclass(cls, SppdetError) else SppdetError
        raise cls(error[1] if ranks.is_main else f"(rank 0) {error[1]}")
    return result
