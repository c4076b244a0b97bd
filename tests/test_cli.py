"""The command line: help, version, and clear errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sppdet import __version__
from sppdet.cli import COMMANDS


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sppdet", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_data_stats_json_and_clear_errors(make_voc, tmp_path):
    root = make_voc(n_images=3, classes=("RBC", "WBC"))
    (tmp_path / "classes.txt").write_text("RBC\nWBC\n")
    result = run_cli("data-stats", "--voc", str(root), "--classes", str(tmp_path / "classes.txt"), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["images"], stats["objects"]) == (3, 3)
    assert stats["per_class"]["RBC"]["objects"] == 2
    bad = run_cli("data-stats", "--voc", str(root))
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "is not in the class list" in bad.stderr
    missing = run_cli("data-stats", "--voc", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
