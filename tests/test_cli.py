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


def test_option_defaults_come_from_the_parameter_dataclasses():
    """Each default is written once: the commands' options show the dataclasses' values."""
    from proposals import CommonOptions
    from sppdet.cli.finetune import finetune
    from sppdet.cli.proposals import proposals_cmd
    from sppdet.cli.train_svm import train_svm
    from sppdet.heads.finetune import FinetuneParams
    from sppdet.heads.train import TrainParams

    def defaults(command):
        return {p.name: p.default for p in command.params}

    t, opts = TrainParams(), defaults(train_svm)
    assert (opts["svm_c"], opts["pos_weight"], opts["bias_mult"], opts["svm_tol"], opts["svm_max_iter"]) == \
        (t.svm.C, t.svm.pos_weight, t.svm.bias_mult, t.svm.tol, t.svm.max_iter)
    assert (opts["neg_iou"], opts["hard_thresh"], opts["evict_thresh"], opts["retrain_every"],
            opts["max_negatives"], opts["collapse_share"], opts["max_c_boosts"], opts["gt_negatives"]) == \
        (t.mining.neg_iou, t.mining.hard_thresh, t.mining.evict_thresh, t.mining.retrain_every,
         t.mining.max_negatives, t.mining.collapse_share, t.mining.max_c_boosts, t.mining.gt_negatives)
    assert (opts["bbox_lambda"], opts["bbox_min_iou"], opts["bbox_max_per_class"], opts["bbox_reg"]) == \
        (t.bbox.lam, t.bbox.min_iou, t.bbox.max_per_class, True)
    assert (opts["use_difficult"], opts["max_positives"], opts["target_norm"], opts["norm_images"],
            opts["norm_windows"], opts["seed"]) == \
        (t.use_difficult, t.max_positives or 0, t.target_norm, t.norm_images, t.norm_windows, t.seed)
    f, opts = FinetuneParams(), defaults(finetune)
    for name, value in f.as_dict().items():
        if name not in ("iterations", "lr_step"):  # None: they depend on --conv-top
            assert opts[name] == value, name
    c, opts = CommonOptions(), defaults(proposals_cmd)
    assert (opts["max_boxes"], opts["min_side"], opts["dedupe"], opts["max_side"]) == \
        (c.max_boxes, c.min_side, c.dedupe, c.max_side)


def test_default_of_reads_plain_and_factory_defaults():
    from dataclasses import dataclass, field

    from sppdet.cli.options import default_of

    @dataclass
    class P:
        a: int = 3
        b: list = field(default_factory=lambda: [1, 2])
        c: int = field(default=0)

    assert (default_of(P, "a"), default_of(P, "b"), default_of(P, "c")) == (3, [1, 2], 0)
    with pytest.raises(AttributeError, match="no field 'z'"):
        default_of(P, "z")


def test_help_lists_the_commands_without_importing_them():
    """`sppdet --help` reads the commands' docstrings as text: fast, no torch; the short
    help equals what click derives from the imported commands."""
    import importlib

    from sppdet.cli import short_help

    code = ("import sys; from sppdet.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'cv2' not in sys.modules, 'imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name, target in COMMANDS.items():
        assert name in out.stdout
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        for limit in (45, 200):
            assert short_help(target, limit) == command.get_short_help_str(limit), name
