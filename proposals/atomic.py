"""Atomic file writes: write to a hidden temporary name beside the file, then rename.

An interrupted run never leaves a half-written file under the final name, so a resumed
run can trust every file it finds. The one copy of these helpers: ``sppdet.fileio``
re-exports them (this package never imports sppdet).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; on success rename it onto ``path``,
    on failure delete it. Readers never see a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets a later run tell a killed run's leftovers from files
    # another process is writing (``remove_stale_temporaries``).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed .npz file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write pretty-printed JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _writer_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of killed runs in ``directory`` (``.NAME.PID-XXXX.tmp``
    whose writer process is gone, and names without a pid, which older versions wrote);
    returns them. Temporary files of running writers are left alone."""
    removed = []
    for tmp in Path(directory).glob(f".*{TMP_SUFFIX}"):
        m = re.search(r"\.(\d+)-[^.]*\.tmp$", tmp.name)
        try:
            if m is None or not _writer_alive(int(m.group(1))):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed
