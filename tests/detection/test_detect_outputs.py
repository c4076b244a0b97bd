"""detect's outputs: --draw never overwrites one output with another (or an input), and an
unwritable --json or --draw fails before any detection work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sppdet.cli import main
from sppdet.cli.detect import check_writable, drawn_paths
from sppdet.errors import SppdetError


def test_drawn_paths_are_distinct_and_never_an_input(tmp_path):
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png"
    here = tmp_path / "out" / "y.jpg"
    out = tmp_path / "out"
    paths = drawn_paths([a, b, a, here], out)
    assert [p.name for p in paths] == ["x.jpg", "x_2.jpg", "x_3.jpg", "y_2.jpg"]
    assert len(set(paths)) == 4 and here not in paths


def test_unwritable_outputs_fail_before_the_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(SppdetError, match="is a folder"):
        check_writable(tmp_path, "--json", folder=False)
    with pytest.raises(SppdetError, match="is a file"):
        check_writable(tmp_path / "file", "--draw", folder=True)
    with pytest.raises(SppdetError, match="cannot write the --json output"):
        check_writable(tmp_path / "file" / "sub" / "d.json", "--json", folder=False)

    import sppdet.detector

    def no_work(*a, **k):
        raise AssertionError("the detector was loaded before the outputs were checked")

    monkeypatch.setattr(sppdet.detector.Detector, "load", no_work)
    image = tmp_path / "i.jpg"
    image.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["detect", str(image), "--json", str(tmp_path / "file" / "d.json")])
    assert e.value.code == 1 and "cannot write the --json output" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SppdetError, match="cannot write"):
            check_writable(ro / "d.json", "--json", folder=False)
