"""The table, the JSON, the PR plot, and ``sppdet eval`` end to end on a synthetic data set."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sppdet.data import VOCDataset
from sppdet.detections import ClassDetections
from sppdet.evaluation.pipeline import evaluate_split, write_report
from sppdet.evaluation.result_files import write_result_files

CLASSES = ("RBC", "WBC", "Platelets")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sppdet", *args], capture_output=True, text=True)


def perfect_and_noise(dataset: VOCDataset, noise: bool) -> dict[str, ClassDetections]:
    """Ground truth as detections (score 1), plus an FP above each when ``noise``."""
    out = {}
    for k, name in enumerate(dataset.classes):
        ids, scores, boxes = [], [], []
        for i in dataset.ids:
            a = dataset.annotation(i)
            for b in a.boxes[a.labels == k]:
                ids.append(i); scores.append(1.0); boxes.append(b)
                if noise:
                    ids.append(i); scores.append(2.0); boxes.append(b + [200, 200, 200, 200])
        out[name] = ClassDetections(ids, scores, np.array(boxes).reshape(-1, 4))
    return out


@pytest.fixture
def voc(make_voc, tmp_path):
    root = make_voc(n_images=4, classes=CLASSES[:2])       # no Platelets in the ground truth
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root, tmp_path / "classes.txt"


def test_report_table_json_and_plot(voc, tmp_path):
    root, _ = voc
    ds = VOCDataset(root, split="train", classes=CLASSES)
    anns = [ds.annotation(i) for i in ds.ids]
    report = evaluate_split(perfect_and_noise(ds, noise=True), anns, ds.classes)
    # each class: FP (score 2) then TP per box, alternating: rec .5 .5 1 1, prec 0 .5 1/3 .5
    ev = report.voc.per_class["RBC"]
    assert ev.fp.tolist() == [1, 1, 0, 0] and ev.tp.tolist() == [0, 0, 1, 1]
    table = report.table
    for name in CLASSES:
        assert name in table
    assert "n/a" in table and "mAP" in table            # Platelets: no ground truth
    data = report.to_json()
    assert data["metric"] == "voc07_11pt" and data["AP"]["Platelets"] is None
    assert data["mAP"] == pytest.approx(np.mean([data["AP"]["RBC"], data["AP"]["WBC"]]))
    assert 0 <= data["mAP"] <= 1 and 0 <= data["mAP_area"] <= 1 and 0 <= data["coco"]["AP"] <= 1
    paths = write_report(report, "train", out_dir=tmp_path / "out", json_path=tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["AP_area"] == data["AP_area"]
    png = tmp_path / "out" / "pr_curves_train.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "eval_train.txt").read_text().startswith("class")


def test_cli_eval_detections(voc, tmp_path):
    root, classes = voc
    ds = VOCDataset(root, split="train", classes=CLASSES)
    write_result_files(tmp_path / "dets", "train", perfect_and_noise(ds, noise=False), CLASSES)
    r = run_cli("eval", "--voc", str(root), "--split", "train", "--classes", str(classes),
                "--detections", str(tmp_path / "dets"), "--out", str(tmp_path / "out"),
                "--json", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["mAP"] == 1.0 and data["mAP_area"] == 1.0 and data["AP"]["Platelets"] is None
    assert math.isclose(data["coco"]["AP"], 1.0)
    assert set(data) >= {"metric", "mAP", "AP", "mAP_area", "AP_area", "coco"}
    assert (tmp_path / "out" / "pr_curves_train.png").is_file()
    assert "mAP" in r.stdout and "100.0" in r.stdout
    # --limit: detections on later images are ignored, with a note
    r = run_cli("eval", "--voc", str(root), "--split", "train", "--classes", str(classes), "--limit", "2",
                "--detections", str(tmp_path / "dets"), "--no-coco")
    assert r.returncode == 0 and "ignored 2 detections" in r.stderr


def test_cli_eval_errors_are_one_line(voc, tmp_path):
    root, classes = voc
    (tmp_path / "dets").mkdir()
    r = run_cli("eval", "--voc", str(root), "--split", "train", "--classes", str(classes), "--detections", str(tmp_path / "dets"))
    assert r.returncode == 1 and "missing result files" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("eval", "--voc", str(root), "--split", "train", "--classes", str(classes))
    assert r.returncode == 1 and "exactly one of --detections" in r.stderr
    r = run_cli("eval", "--voc", str(root), "--split", "train", "--classes", str(classes), "--detections", str(tmp_path / "dets"),
                "--device", "cpu")
    assert r.returncode != 0 and "only apply with --model" in r.stderr and "Traceback" not in r.stderr


def test_model_path_calls_the_detector_and_writes_result_files(voc, tmp_path, monkeypatch):
    import types

    from sppdet.detections import Detections
    from sppdet.errors import SppdetError
    from sppdet.evaluation.pipeline import load_or_run_detections
    from sppdet.evaluation.result_files import read_result_files

    root, _ = voc
    ds = VOCDataset(root, split="train", classes=CLASSES)
    calls = {}

    def detect_dataset(model_dir, dataset, **kwargs):
        calls.update(model_dir=model_dir, kwargs=kwargs)
        for i in dataset.ids:
            a = dataset.annotation(i)
            yield Detections(i, a.boxes, np.ones(len(a.boxes)), a.labels)

    monkeypatch.setitem(sys.modules, "sppdet.detector", types.SimpleNamespace(detect_dataset=detect_dataset))
    dets = load_or_run_detections(ds, "train", model_dir=tmp_path / "model", out_dir=tmp_path / "out", device="cpu")
    assert calls == {"model_dir": tmp_path / "model", "kwargs": {"device": "cpu"}}
    back = read_result_files(tmp_path / "out", "train", CLASSES)
    for name in CLASSES:
        assert back[name].image_ids.tolist() == dets[name].image_ids.tolist()
    monkeypatch.setitem(sys.modules, "sppdet.detector", None)   # as if the module did not exist
    with pytest.raises(SppdetError, match="--model needs sppdet.detector"):
        load_or_run_detections(ds, "train", model_dir=tmp_path / "model")


def test_eval_saves_display_thresholds_into_the_model(voc, tmp_path, monkeypatch):
    """eval --model --save-display-thresholds writes per-class F1-optimal thresholds that
    separate the true boxes (score 1) from the noise (score -1) here."""
    import types

    from click.testing import CliRunner

    from sppdet.cli import cli
    from sppdet.detections import Detections
    from sppdet.heads.model_dir import read_config

    root, classes_file = voc

    def detect_dataset(model_dir, dataset, **kwargs):
        for i in dataset.ids:
            a = dataset.annotation(i)
            noise = a.boxes + 300
            yield Detections(i, np.concatenate([a.boxes, noise]),
                             np.concatenate([np.ones(len(a.boxes)), -np.ones(len(noise))]),
                             np.concatenate([a.labels, a.labels]))

    monkeypatch.setitem(sys.modules, "sppdet.detector", types.SimpleNamespace(detect_dataset=detect_dataset))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"format_version": 1, "test": {"nms_iou": 0.3}}))
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--split", "train", "--classes", str(classes_file),
                                  "--model", str(model), "--no-coco", "--save-display-thresholds"])
    assert r.exit_code == 0, r.output
    test = read_config(model)["test"]
    assert test["nms_iou"] == 0.3                               # other settings kept
    assert set(test["display_thresholds"]) == set(CLASSES)
    for name in CLASSES[:2]:
        assert test["display_thresholds"][name] == pytest.approx(0.0)   # halfway between 1 and -1
    assert test["display_thresholds"]["Platelets"] == test["display_threshold"]  # no ground truth
    assert "F1-optimal" in test["display_thresholds_from"]
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--split", "train", "--classes", str(classes_file),
                                  "--detections", str(tmp_path), "--save-display-thresholds"])
    assert r.exit_code != 0 and "only apply with --model" in r.output
    # Into another model (the recipe retrained on all data); its classes must match.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"format_version": 1, "classes": list(CLASSES)}))
    args = ["eval", "--voc", str(root), "--split", "train", "--classes", str(classes_file), "--model", str(model),
            "--no-coco", "--save-display-thresholds", "--thresholds-into", str(other)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert read_config(other)["test"]["display_thresholds"] == test["display_thresholds"]
    (other / "config.json").write_text(json.dumps({"format_version": 1, "classes": ["x", "y", "z"]}))
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "classes differ" in str(r.exception or r.output)


def test_library_evaluate_is_what_eval_runs(voc, tmp_path):
    """``sppdet.evaluate`` on result files: the same numbers as ``evaluate_split`` by hand;
    ``limit`` drops detections on later images and counts them."""
    import sppdet
    from sppdet.errors import ArgumentError

    root, _ = voc
    ds = VOCDataset(root, split="train", classes=CLASSES)
    dets = perfect_and_noise(ds, noise=True)
    write_result_files(tmp_path / "dets", "train", dets, CLASSES)
    report = sppdet.evaluate(ds, detections_dir=tmp_path / "dets", coco_metrics=False, progress=False)
    by_hand = evaluate_split(dets, [ds.annotation(i) for i in ds.ids], CLASSES, with_coco=False)
    assert report.voc.ap07 == pytest.approx(by_hand.voc.ap07, nan_ok=True)
    assert report.images == 4 and report.ignored_detections == 0 and report.coco is None
    limited = VOCDataset(root, split="train", classes=CLASSES, limit=2)
    part = sppdet.evaluate(limited, detections_dir=tmp_path / "dets", coco_metrics=False, progress=False)
    assert part.images == 2 and part.ignored_detections == 4  # 2 later images x (TP + FP)
    with pytest.raises(ArgumentError, match="only apply with a model"):
        sppdet.evaluate(ds, detections_dir=tmp_path / "dets", device="cpu")
    with pytest.raises(ArgumentError, match="only apply with a model"):
        sppdet.evaluate(ds, detections_dir=tmp_path / "dets", precision="bfloat16")


def test_eval_needs_the_images_and_takes_the_models_classes(voc, tmp_path, monkeypatch):
    """No silent --split train: eval asks for --split or --ids. With --model the classes are
    the model's (no --classes needed, here not VOC's); --classes that differ are refused with
    the differing names."""
    import types

    from click.testing import CliRunner

    from sppdet.cli import cli
    from sppdet.detections import Detections

    root, classes_file = voc
    seen = {}

    def detect_dataset(model_dir, dataset, **kwargs):
        seen["classes"] = dataset.classes
        for i in dataset.ids:
            a = dataset.annotation(i)
            yield Detections(i, a.boxes, np.ones(len(a.boxes)), a.labels)

    monkeypatch.setitem(sys.modules, "sppdet.detector", types.SimpleNamespace(detect_dataset=detect_dataset))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"format_version": 2, "classes": list(CLASSES)}))
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--model", str(model), "--no-coco"])
    assert r.exit_code == 2 and "--split NAME" in r.output and "--ids FILE" in r.output
    help_text = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert "eval has no default" in help_text and "default: train" not in help_text
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--classes", str(classes_file),
                                 "--detections", str(tmp_path)])
    assert r.exit_code == 2 and "--split NAME" in r.output
    # The model's classes, without --classes (the VOC 20 would not parse these annotations).
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--split", "train", "--model", str(model),
                                 "--no-coco", "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert seen["classes"] == CLASSES and json.loads((tmp_path / "m.json").read_text())["mAP"] == 1.0
    ids = tmp_path / "ids.txt"
    ids.write_text("000001\n000002\n")
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--ids", str(ids), "--model", str(model), "--no-coco"])
    assert r.exit_code == 0, r.output
    # --classes that differ from the model's: both sides named.
    other = tmp_path / "other.txt"
    other.write_text("RBC\nWBC\nOther\n")
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--split", "train", "--classes", str(other),
                                 "--model", str(model), "--no-coco"])
    assert r.exit_code == 1
    message = str(r.exception)
    assert "config.json" in message and "only in the model: Platelets" in message
    assert "only in --classes: Other" in message
    reordered = tmp_path / "reordered.txt"
    reordered.write_text("WBC\nRBC\nPlatelets\n")
    r = CliRunner().invoke(cli, ["eval", "--voc", str(root), "--split", "train", "--classes", str(reordered),
                                 "--model", str(model), "--no-coco"])
    assert r.exit_code == 1 and "another order" in str(r.exception)
