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


STUB = """#!/usr/bin/env bash
# Stands in for sppdet: logs each call; `pack SRC DST` writes DST's model files.
echo "$*" >> "$STUB_LOG"
if [ "$1" = pack ]; then mkdir -p "$3" && touch "$3"/config.json "$3"/conv_top.npz "$3"/fc.npz; fi
if [ "$1" = finetune ] && [ -n "${STUB_FAIL:-}" ] && [[ "$*" == *"$STUB_FAIL"* ]]; then exit 3; fi
"""


def test_default_model_recipe_runs_every_step_once_and_resumes(tmp_path):
    """benchmarks/train_default_model.sh with a stub for sppdet: the steps, their order and
    arguments, the package folder swapped in, and a second run that redoes nothing; a step
    that fails stops the recipe and runs again next time."""
    stub, log = tmp_path / "sppdet", tmp_path / "calls.txt"
    stub.write_text(STUB)
    stub.chmod(0o755)
    cache, pack_into = tmp_path / "cache", tmp_path / "pkg" / "model"
    pack_into.mkdir(parents=True)
    (pack_into / "README.md").write_text("kept")
    env = {"PATH": "/usr/bin:/bin", "SPPDET": str(stub), "STUB_LOG": str(log), "PACK_INTO": str(pack_into),
           "STUB_FAIL": "--split trainval"}

    def recipe() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "benchmarks" / "train_default_model.sh"), str(cache),
                               str(tmp_path / "voc")], capture_output=True, text=True, env=env)

    r = recipe()  # the shipped (trainval) training fails: nothing is packed
    assert r.returncode != 0 and not (pack_into / "fc.npz").exists()
    first = log.read_text().splitlines()
    env.pop("STUB_FAIL")
    r = recipe()
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()[len(first):]
    verbs = [c.split()[0] for c in calls]
    # only the failed training and what follows it ran again
    assert verbs == ["finetune", "pack", "eval"], calls
    assert "--split trainval" in calls[0] and "--iterations 12000" in calls[0]
    assert "--fc6-rank 256 --calibrate" in calls[1] and "model_conv_all_688_12000" in calls[1]
    assert "--save-display-thresholds --thresholds-into" in calls[2] and "_int8_r256" in calls[2]
    assert calls[2].split("--model ")[1].split()[0].endswith("model_conv_dev_688_12000_int8_r256")
    assert sorted(p.name for p in pack_into.iterdir()) == ["README.md", "config.json", "conv_top.npz", "fc.npz"]
    assert (pack_into / "README.md").read_text() == "kept"
    # the first run did everything else once, in order
    firsts = [c.split()[0] + (" train" if "--split train " in c + " " else "") for c in first]
    assert firsts[:2] == ["proposals", "extract"] and "--split trainval" in first[0]
    assert sorted(firsts[2:]) == sorted(["finetune train", "finetune", "eval", "analyze", "pack", "eval"])
    n = len(log.read_text().splitlines())
    assert recipe().returncode == 0 and len(log.read_text().splitlines()) == n  # all done before


def test_a_failed_step_is_not_marked_done_when_its_caller_checks_the_status(tmp_path):
    # set -e is off inside a function called as `run ... || ...`: run must stop by itself.
    r = script(tmp_path, "run broken false || echo caught $?")
    assert r.returncode == 0 and "caught 1" in r.stdout
    assert not (tmp_path / "logs" / "broken.time").exists()
