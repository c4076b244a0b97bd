"""Is a cache's .npz file complete? A cheap check for resuming runs.

Files are written under a temporary name and renamed, so a killed run leaves no partial
file under a final name; but a full disk, a copy cut short or a crashed machine can. Before
a run skips an image as "already cached", ``npz_problem`` reads the file's zip directory
(at its end: a truncated file has none) and checks the arrays a reader needs are listed and
lie inside the file. It does not read the arrays (damage inside them shows when they are
read, as a clear error naming the file).
"""

from __future__ import annotations

import os
import zipfile
from typing import Iterable

_LOCAL_HEADER = 30  # bytes of a zip local file header before the name


def npz_problem(path: str | os.PathLike, required: Iterable[str]) -> str | None:
    """Why the .npz at ``path`` is not a complete file with arrays ``required``; None if it is."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if size == 0:
        return "empty file"
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a complete .npz file ({e})"
    names = {info.filename.removesuffix(".npy") for info in infos}
    missing = [k for k in required if k not in names]
    if missing:
        return f"array {missing[0]!r} missing"
    for info in infos:
        if info.header_offset + _LOCAL_HEADER + len(info.filename) + info.compress_size > size:
            return f"truncated (array {info.filename!r} ends past the end of the file)"
    return None
