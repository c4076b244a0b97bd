"""benchmarks/lib.sh: the timed, resumable steps the benchmark scripts run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/usr/bin/time").is_file() or shutil.which("bash") is None,
                                reason="needs bash and GNU time")


def script(cache: Path, body: str) -> subprocess.CompletedProcess:
    text = f'set -euo pipefail\nC={cache}\nmkdir -p "$C/logs"\ncd {REPO}\n. benchmarks/lib.sh\n{body}\n'
    return subprocess.run(["bash", "-c", text], capture_output=True, text=True)


def test_a_finished_step_is_skipped_and_a_failed_one_stops_the_script(tmp_path):
    r = script(tmp_path, "run hello echo hi\nrun hello echo again")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("hello: echo hi") and "hello done:" in lines[1] and "s wall" in lines[1]
    assert lines[2].endswith("hello: done before") and len(lines) == 3
    assert (tmp_path / "logs" / "hello.log").read_text() == "hi\n"
    assert "peak RSS" in (tmp_path / "logs" / "hello.time").read_text()

    r = script(tmp_path, "run broken false\necho not reached")
    assert r.returncode != 0 and "not reached" not in r.stdout
    assert not (tmp_path / "logs" / "broken.time").exists()  # not finished: run again next time
    assert (tmp_path / "logs" / "broken.tmp").exists()


def test_timed_writes_the_time_where_asked(tmp_path):
    r = script(tmp_path, f'timed step "$C/logs/step.time" sh -c "echo out; echo err >&2"')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "logs" / "step.log").read_text() == "out\nerr\n"
    assert "s wall" in (tmp_path / "logs" / "step.time").read_text()
