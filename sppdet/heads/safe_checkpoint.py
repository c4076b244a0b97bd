"""Training checkpoints that cannot run code: one ``.npz`` (read with ``allow_pickle=False``).

A checkpoint holds a model's state dict, an optimizer's state dict, torch's random number
generator states (CPU, and CUDA when in use) and the caller's metadata (JSON-able values,
numpy arrays and tensors). Tensors and arrays are stored as npz members ``a0, a1, ...``;
everything else is one JSON document (member ``checkpoint.json``) whose placeholders name
those members, so loading needs neither pickle nor ``torch.load``.

    save_training_checkpoint(path, model=net, optimizer=opt, meta={"iteration": t})
    meta = load_training_checkpoint(path, net, opt)   # restores all three, returns meta

Writes are atomic (a killed run leaves the previous checkpoint or the new one). A file that
is not such a checkpoint (a pickle, a damaged or truncated file) raises ``DataError``
naming it; nothing in it is executed.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sppdet.errors import ArgumentError, DataError
from sppdet.fileio import atomic_path

FORMAT = "sppdet-training-checkpoint"
VERSION = 1
_JSON_MEMBER = "checkpoint.json"
# numpy has no bfloat16: such tensors travel as their int16 bit patterns.
_BIT_VIEWS = {torch.bfloat16: torch.int16}


class _Encoder:
    """Turns nested containers of tensors/arrays into JSON plus a dict of arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, array: np.ndarray) -> str:
        name = f"a{len(self.arrays)}"
        self.arrays[name] = array
        return name

    def encode(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu()
            view = _BIT_VIEWS.get(t.dtype)
            data = (t.view(view) if view is not None else t).contiguous().numpy()
            return {"__tensor__": self._store(data), "dtype": str(t.dtype).removeprefix("torch.")}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("object arrays cannot be stored in a checkpoint")
            return {"__array__": self._store(obj)}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: self.encode(v) for k, v in obj.items()}
            return {"__items__": [[self.encode(k), self.encode(v)] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v) for v in obj]}
        if isinstance(obj, list):
            return [self.encode(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _decode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        dtype = getattr(torch, obj["dtype"])
        view = _BIT_VIEWS.get(dtype)
        t = torch.from_numpy(np.array(arrays[obj["__tensor__"]]))
        return t.view(dtype) if view is not None else t
    if "__array__" in obj:
        return np.array(arrays[obj["__array__"]])
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__items__"]}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_training_checkpoint(path: str | Path, *, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer | None, meta: dict[str, Any],
                             scheduler: Any | None = None) -> None:
    """Atomically write ``model``'s and ``optimizer``'s (and ``scheduler``'s) state, torch's
    RNG states and ``meta`` to ``path`` (an uncompressed .npz)."""
    enc = _Encoder()
    doc = {"format": FORMAT, "version": VERSION,
           "model": enc.encode(model.state_dict()),
           "optimizer": enc.encode(optimizer.state_dict()) if optimizer is not None else None,
           "scheduler": enc.encode(scheduler.state_dict()) if scheduler is not None else None,
           "rng": enc.encode(_rng_states()),
           "meta": enc.encode(dict(meta))}
    text = json.dumps(doc)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{_JSON_MEMBER: np.array(text)}, **enc.arrays)


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The decoded checkpoint: {"model", "optimizer", "scheduler", "rng", "meta"}.

    Raises ``DataError`` naming ``path`` for anything that is not a complete checkpoint of
    this format (pickles included: they are refused unread)."""
    path = Path(path)
    hint = "delete it to start over"
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: not a training checkpoint (a bare array); {hint}")
            arrays = {k: z[k] for k in z.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        reason = "a pickle, which is never read" if "pickle" in str(e) else f"unreadable: {e}"
        raise DataError(f"{path}: not a training checkpoint ({reason}); {hint}") from None
    try:
        doc = json.loads(str(arrays.pop(_JSON_MEMBER)[()]))
        if doc.get("format") != FORMAT:
            raise ValueError("unknown format")
        if doc.get("version") != VERSION:
            raise ValueError(f"format version {doc.get('version')}, this sppdet reads {VERSION}")
        return {k: _decode(doc[k], arrays) for k in ("model", "optimizer", "scheduler", "rng", "meta")}
    except (KeyError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a training checkpoint of this sppdet ({e}); {hint}") from None


def load_training_checkpoint(path: str | Path, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer | None,
                             scheduler: Any | None = None, *, expect: dict[str, Any] | None = None,
                             restore_rng: bool = True) -> dict[str, Any]:
    """Restore ``model``, ``optimizer`` (and ``scheduler``) and torch's RNG states from
    ``path``; return the metadata saved with them.

    ``expect``: metadata entries that must equal the saved ones (the run's settings); a
    checkpoint of another run raises ``DataError`` before anything is restored."""
    blob = read_training_checkpoint(path)
    meta = blob["meta"]
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not a training checkpoint of this sppdet (no metadata); "
                        f"delete it to start over")
    for key, value in (expect or {}).items():
        if _canonical(meta.get(key)) != _canonical(value):
            raise DataError(f"{path}: checkpoint of a run with other settings ({key}); "
                            f"delete it to start over")
    try:
        model.load_state_dict(blob["model"])
        if optimizer is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: checkpoint does not fit this model ({e}); "
                        f"delete it to start over") from None
    if restore_rng:
        _set_rng_states(blob["rng"])
    return meta


def _canonical(value: Any) -> str:
    """Settings compare as plain JSON (tuples as lists, arrays and tensors as nested lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (torch.Tensor, np.ndarray, np.generic)):
            return v.tolist()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return json.dumps(plain(value), sort_keys=True, default=str)


def refuse_pickled_checkpoint(path: str | Path) -> None:
    """Stop when an older sppdet's pickled checkpoint (``path`` with suffix ``.pt``) lies
    beside ``path``: it is never read, since unpickling can run code."""
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        raise ArgumentError(f"{path}: training checkpoints are .npz files, not pickles")
    legacy = path.with_suffix(".pt")
    if legacy.exists():
        raise DataError(f"{legacy}: a checkpoint of an older sppdet, saved as a pickle; it is not "
                        f"read (unpickling can run code). Delete it to start the training over")
