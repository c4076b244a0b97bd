"""Atomic file writes: write to a temporary name in the same folder, then rename.

An interrupted run never leaves a half-written file under the final name, so a resumed
run can trust every file it finds. The helpers are ``proposals.atomic``'s (one copy; the
proposals package never imports sppdet, so sppdet imports them from there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from proposals.atomic import atomic_path, remove_stale_temporaries, save_json, save_npz

__all__ = ["atomic_path", "load_json", "remove_stale_temporaries", "save_json", "save_npz"]


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
