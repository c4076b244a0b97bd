"""Devkit result files: format, exact round trip, and clear errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sppdet.boxes import voc_to_internal
from sppdet.detections import ClassDetections
from sppdet.errors import DataError
from sppdet.evaluation.result_files import (parse_result_file, read_result_files, result_file_name,
                                            write_result_files)
from sppdet.evaluation.voc import evaluate_detections

CLASSES = ("cat", "dog", "bird")


def random_dets(rng, n, ids):
    x1y1 = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(1, 200, (n, 2))
    boxes = np.concatenate([x1y1, x1y1 + wh], axis=1)
    return ClassDetections(rng.choice(ids, n), rng.normal(size=n), boxes)


def test_line_format_is_the_devkits(tmp_path):
    # internal (0, 1, 10, 20) is VOC (1, 2, 10, 20)
    d = ClassDetections(["000005"], [0.25], np.array([[0.0, 1.0, 10.0, 20.0]]))
    (path,) = write_result_files(tmp_path, "test", {"cat": d}, ["cat"])
    assert path.name == "comp4_det_test_cat.txt" == result_file_name("test", "cat")
    assert path.read_text() == "000005 0.25 1.0 2.0 10.0 20.0\n"


def test_round_trip_is_exact_in_voc_space(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(20)]
    dets = {"cat": random_dets(rng, 50, ids), "dog": random_dets(rng, 7, ids)}
    # VOC-space boxes with fractional values: read back bit for bit
    dets["dog"] = ClassDetections(dets["dog"].image_ids, dets["dog"].scores,
                                  voc_to_internal(np.round(rng.uniform(1, 400, (7, 4)), 3)))
    paths = write_result_files(tmp_path, "val", dets, CLASSES)
    assert [p.name for p in paths] == [f"comp4_det_val_{c}.txt" for c in CLASSES]
    assert paths[2].read_text() == ""                      # bird: no detections, empty file
    back = read_result_files(tmp_path, "val", CLASSES)
    assert set(back) == set(CLASSES) and len(back["bird"]) == 0
    for name in ("cat", "dog"):
        assert back[name].image_ids.tolist() == dets[name].image_ids.tolist()  # order kept
        assert back[name].scores.tolist() == dets[name].scores.tolist()        # exact
        np.testing.assert_allclose(back[name].boxes, dets[name].boxes, rtol=0, atol=1e-12)
    voc_written = dets["dog"].boxes + [1, 1, 0, 0]
    voc_read = back["dog"].boxes + [1, 1, 0, 0]
    assert voc_read.tolist() == voc_written.tolist()
    assert not list(tmp_path.glob(".*.tmp"))               # atomic writes leave nothing behind


def test_evaluating_files_equals_evaluating_memory(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"{i:06d}" for i in range(10)]
    anns = []
    for img in ids:
        n = int(rng.integers(0, 4))
        x1y1 = rng.integers(0, 200, (n, 2))
        boxes = np.concatenate([x1y1, x1y1 + rng.integers(5, 100, (n, 2))], axis=1).astype(float)
        anns.append(SimpleNamespace(image_id=img, boxes=boxes, labels=rng.integers(0, 3, n),
                                    difficult=rng.random(n) < 0.2))
    dets = {}
    for k, name in enumerate(CLASSES):
        gt = [(a.image_id, b) for a in anns for b, lab in zip(a.boxes, a.labels) if lab == k]
        rows = [(img, float(rng.random()), b + rng.normal(0, 4, 4)) for img, b in gt for _ in range(2)]
        if rows:
            i, s, b = zip(*rows)
            dets[name] = ClassDetections(list(i), list(s), np.array(b))
    write_result_files(tmp_path, "test", dets, CLASSES)
    direct = evaluate_detections(dets, anns, CLASSES)
    via_files = evaluate_detections(read_result_files(tmp_path, "test", CLASSES), anns, CLASSES)
    assert direct.ap07 == via_files.ap07 and direct.ap_area == via_files.ap_area
    assert direct.mAP > 0


def test_missing_and_malformed_files_are_clear_errors(tmp_path):
    write_result_files(tmp_path, "test", {}, ["cat"])
    with pytest.raises(DataError, match="missing result files for split 'test': comp4_det_test_dog.txt"):
        read_result_files(tmp_path, "test", ["cat", "dog"])
    with pytest.raises(DataError, match="detections folder not found"):
        read_result_files(tmp_path / "nope", "test", ["cat"])
    bad = tmp_path / "comp4_det_test_cat.txt"
    bad.write_text("000001 0.5 1 2 3 4\n\n000002 0.5 1 2 3\n")
    with pytest.raises(DataError, match=r"comp4_det_test_cat.txt:3: expected"):
        parse_result_file(bad)
    bad.write_text("000001 high 1 2 3 4\n")
    with pytest.raises(DataError, match=r":1: expected"):
        parse_result_file(bad)
    bad.write_text("000001 nan 1 2 3 4\n")
    with pytest.raises(DataError, match="finite"):
        parse_result_file(bad)
    with pytest.raises(ValueError, match="cannot be written"):
        write_result_files(tmp_path, "test", {"cat": ClassDetections(["a b"], [1.0], np.zeros((1, 4)))}, ["cat"])
