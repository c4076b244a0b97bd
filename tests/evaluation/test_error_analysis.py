"""Hoiem et al.'s false-positive types on hand-built cases, the per-group sums, the plot,
and `sppdet analyze` over devkit result files."""

from __future__ import annotations

import json

import numpy as np

from sppdet.data import Annotation
from sppdet.detections import ClassDetections
from sppdet.evaluation.error_analysis import (IGNORED, TYPES, analyze, classify_detections,
                                              groups_for, plot_analysis)

CLASSES = ("cat", "dog", "person")


def _ann(image_id, boxes, labels, difficult):
    return Annotation(image_id=image_id, boxes=np.array(boxes, np.float64), labels=np.array(labels),
                      difficult=np.array(difficult, bool), width=500, height=500,
                      truncated=np.zeros(len(labels), bool))


ANNS = [_ann("a", [[0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 100, 300], [200, 200, 300, 300]],
             [0, 1, 2, 0], [False, False, False, True]),
        _ann("b", [[0, 0, 50, 50]], [2], [False])]

# Cat detections, best first, with the type each must get (by hand).
CAT = [([0, 0, 100, 100], 0.9, "Cor"),       # matches the cat
       ([0, 0, 100, 100], 0.8, "Loc"),       # a duplicate of the matched cat
       ([0, 0, 100, 40], 0.7, "Loc"),        # IoU 0.4 with the cat
       ([200, 0, 300, 100], 0.6, "Sim"),     # on the dog: a similar class (animals)
       ([0, 200, 100, 300], 0.5, "Oth"),     # on the person
       ([400, 400, 450, 450], 0.4, "BG"),    # nothing there
       ([200, 200, 300, 300], 0.3, None)]    # the difficult cat: ignored


def _dets(rows, image="a"):
    order = np.random.default_rng(0).permutation(len(rows))  # input order must not matter
    rows = [rows[i] for i in order]
    return ClassDetections(np.array([image] * len(rows)), np.array([r[1] for r in rows]),
                           np.array([r[0] for r in rows], np.float64))


def test_each_detection_gets_the_type_worked_out_by_hand():
    types = classify_detections(0, _dets(CAT), ANNS, similar={1})
    want = [TYPES.index(t) if t else IGNORED for _, _, t in CAT]
    assert types.tolist() == want


def test_without_a_group_the_confusion_is_another_class():
    types = classify_detections(0, _dets(CAT), ANNS, similar=set())
    assert types[3] == TYPES.index("Oth")
    # A person detection on the dog (person is in no group) is Oth; one in image b is Cor.
    person = ClassDetections(np.array(["a", "b"]), np.array([0.9, 0.8]),
                             np.array([[200, 0, 300, 100], [0, 0, 50, 50]], np.float64))
    assert classify_detections(2, person, ANNS, similar=set()).tolist() == [3, 0]


def test_counts_at_multiples_of_the_number_of_objects_and_groups():
    result = analyze({"cat": _dets(CAT)}, ANNS, CLASSES, multiples=(1.0, 6.0))
    cat = result["classes"]["cat"]
    assert cat["num_objects"] == 1  # the difficult cat does not count
    assert cat["counts"][0] == [1, 0, 0, 0, 0]  # top 1: the match
    assert cat["counts"][1] == [1, 2, 1, 1, 1]  # top 6: every type (the ignored one skipped)
    assert set(result["groups"]) == {"animals", "all"}  # VOC's groups present in CLASSES
    assert result["groups"]["animals"]["classes"] == ["cat", "dog"]
    assert result["groups"]["animals"]["counts"][1] == [1, 2, 1, 1, 1]  # dog has no detections
    shares = result["groups"]["all"]["shares"][1]
    assert abs(sum(shares.values()) - 1) < 1e-12 and abs(shares["Loc"] - 2 / 6) < 1e-12


def test_groups_for_voc_classes():
    from sppdet.data import VOC_CLASSES

    groups = groups_for(VOC_CLASSES)
    assert groups["animals"] == ("bird", "cat", "cow", "dog", "horse", "sheep")
    assert len(groups["vehicles"]) == 7 and groups["furniture"] == ("chair", "diningtable", "sofa")
    assert groups_for(("RBC", "WBC", "Platelets")) == {}


def test_plot_and_cli(tmp_path, make_voc):
    result = analyze({"cat": _dets(CAT)}, ANNS, CLASSES)
    png = plot_analysis(result, tmp_path / "a.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from sppdet.cli import main
    from sppdet.data import VOCDataset
    from sppdet.evaluation.result_files import write_result_files

    root = make_voc(n_images=4, classes=("cat", "dog"))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = VOCDataset(root, split="train", classes=("cat", "dog"))
    gts = [ds.annotation(i) for i in ds.ids]
    dets = {"cat": ClassDetections(np.array([g.image_id for g in gts]), np.linspace(1, 0, len(gts)),
                                   np.concatenate([g.boxes for g in gts])),
            "dog": ClassDetections.empty()}
    write_result_files(tmp_path / "res", "train", dets, ds.classes)
    try:
        main(["analyze", "--voc", str(root), "--classes", str(tmp_path / "classes.txt"),
              "--detections", str(tmp_path / "res"), "--out", str(tmp_path / "out")])
    except SystemExit as e:
        assert e.code in (0, None)
    out = json.loads((tmp_path / "out" / "error_analysis_train.json").read_text())
    # Images 0 and 2 hold cats (matched: Cor), 1 and 3 dogs (similar class: Sim).
    assert out["classes"]["cat"]["counts"][out["multiples"].index(2.0)] == [2, 0, 2, 0, 0]
    assert (tmp_path / "out" / "error_analysis_train.png").is_file()
