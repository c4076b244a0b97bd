"""Replace a whole directory at once: build the new one beside it, then swap.

    with atomic_directory(model_dir, exclude={".train-svm-checkpoint"}) as tmp:
        save_npz(tmp / "heads.npz", ...)      # write every file into tmp
        save_json(tmp / "config.json", ...)
    # model_dir now holds the new files; excluded entries went away with the old directory

The temporary directory ``.NAME.sppdet-new`` starts with copies of the files of the
existing directory, except ``exclude``, so files the writer does not touch are kept
(copies, not hard links: a writer may then change a file in place). On
success it takes the place of ``NAME`` (one atomic exchange on Linux, else two renames with
the old one parked as ``.NAME.sppdet-old``), and the old directory is removed afterwards.
If the writer fails or the process is killed, ``NAME`` is left as it was; the next
``atomic_directory`` or ``recover_directory`` call tidies the leftovers (and completes a
swap that was cut between its two renames).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path
from typing import Collection, Iterator

NEW_SUFFIX = ".sppdet-new"
OLD_SUFFIX = ".sppdet-old"


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.with_name(f".{path.name}{NEW_SUFFIX}"), path.with_name(f".{path.name}{OLD_SUFFIX}")


def recover_directory(path: str | os.PathLike) -> None:
    """Finish or undo a replacement of ``path`` that a killed process left half done."""
    path = Path(os.path.abspath(path))
    new, old = _siblings(path)
    if not path.exists() and old.is_dir():
        # Killed between the two renames: ``new`` was complete (it is only renamed then).
        os.rename(new if new.is_dir() else old, path)
    for leftover in (new, old):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap(new: Path, path: Path, old: Path) -> None:
    """Put ``new`` in the place of ``path``; the previous ``path`` ends up at ``old``."""
    if not path.exists():
        os.rename(new, path)
        return
    if _exchange(new, path):
        os.rename(new, old)  # ``new`` now names the old directory
        return
    os.rename(path, old)
    os.rename(new, path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, exclude: Collection[str] = (),
                     keep_existing: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole when the block ends
    without an exception (see the module docstring)."""
    path = Path(os.path.abspath(path))  # "." and ".." have no name to put a sibling beside
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "not a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    new, old = _siblings(path)
    if keep_existing and path.is_dir():
        shutil.copytree(path, new, copy_function=shutil.copy2,
                        ignore=lambda d, names: [n for n in names if Path(d) == path and n in exclude])
    else:
        new.mkdir()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(new, 0o777 & ~mask)
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    _swap(new, path, old)
    shutil.rmtree(old, ignore_errors=True)
