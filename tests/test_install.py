"""The README's Python snippet works after `pip install .` into a fresh virtual environment.

The environment is new and empty except for sppdet's wheel; its dependencies (torch, OpenCV,
...) are borrowed from the interpreter running the tests through a ``.pth`` file, so nothing
is downloaded. The snippet runs outside the checkout, so only the installed package can be
imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SNIPPET = """
import sys
import skimage.data
import sppdet

assert sppdet.__file__.startswith(sys.prefix), sppdet.__file__  # the installed copy
det = sppdet.Detector.load()
result = det(skimage.data.chelsea())  # an RGB array
print(sorted(set(result.class_names)), result.boxes.shape, result.scores.shape, result.labels.shape)
assert "cat" in result.class_names, result
"""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    # Without PYTHONPATH: a checkout on it (with its sppdet.egg-info) would count as installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}"
    return out


def source_copy(dst: Path) -> Path:
    """The files git tracks (else the tree without build outputs), so that building the
    wheel writes nothing into the checkout."""
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "demo_out"))
        return dst
    for name in files:
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


@pytest.mark.slow
def test_readme_snippet_after_pip_install_in_a_fresh_venv(torch_home, tmp_path):
    pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) not installed")
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
    if not hasattr(sys, "real_prefix") and sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment whose packages can be borrowed")
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(wheels), str(source_copy(tmp_path / "src"))])
    (wheel,) = wheels.glob("sppdet-*.whl")
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    run([base_python, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    venv_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                         ).stdout.strip())
    # Borrow the dependencies: a plain path line (the test venv's own .pth files, such as an
    # editable sppdet, are not processed from there).
    (venv_site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "-q", str(wheel)])
    out = run([str(python), "-c", SNIPPET], cwd=tmp_path)
    assert "'cat'" in out.stdout and ", 4) (" in out.stdout  # boxes (N, 4)
    assert (venv / "bin" / "sppdet").is_file()
    run([str(venv / "bin" / "sppdet"), "--help"], cwd=tmp_path)
