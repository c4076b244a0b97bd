"""Newcomer frictions: progress bars do not flood a log file."""

from __future__ import annotations

import os
import subprocess
import sys


def test_progress_bars_are_sparse_when_stderr_is_not_a_terminal():
    """tqdm reads TQDM_* when it is imported: the CLI sets it before any command imports it."""
    code = ("import sys, contextlib; from sppdet.cli import main\n"
            "assert 'tqdm' not in sys.modules\n"
            "with contextlib.suppress(SystemExit):\n    main(['--version'])\n"
            "from tqdm import tqdm\n"
            "import io; print('INTERVAL', tqdm(total=1, file=io.StringIO()).mininterval)")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "INTERVAL 30.0" in r.stdout  # stderr is a pipe here
