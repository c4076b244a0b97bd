"""COCO-format data sets: box conversion, categories, crowds, the box rule, clear errors,
the --voc / --coco options, VOC -> COCO conversion and the COCO evaluation of a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run
from sppdet.data import COCODataset, VOCDataset
from sppdet.data.coco import coco_to_internal, dataset_to_coco, internal_to_coco
from sppdet.detections import ClassDetections
from sppdet.errors import DataError


def test_box_conversion_by_hand_and_round_trip():
    # COCO [x, y, w, h] = [10, 20, 30, 40] covers x in [10, 40), y in [20, 60).
    assert coco_to_internal([10, 20, 30, 40]).tolist() == [[10, 20, 40, 60]]
    assert internal_to_coco([[10, 20, 40, 60]]).tolist() == [[10, 20, 30, 40]]
    # The VOC box (1, 1, 10, 10) has the devkit area 100; its internal and COCO forms too.
    from sppdet.boxes import voc_to_internal

    coco = internal_to_coco(voc_to_internal([1, 1, 10, 10]))
    assert coco.tolist() == [[0, 0, 10, 10]] and coco[0, 2] * coco[0, 3] == 100
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 500, (200, 2)).astype(float)
    boxes = np.concatenate([xy, xy + rng.integers(1, 300, (200, 2))], axis=1)
    assert np.array_equal(coco_to_internal(internal_to_coco(boxes)), boxes)  # integers: exact
    xy = rng.uniform(0, 500, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.5, 300, (200, 2))], axis=1)
    np.testing.assert_allclose(coco_to_internal(internal_to_coco(boxes)), boxes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(internal_to_coco(coco_to_internal(internal_to_coco(boxes))),
                               internal_to_coco(boxes), rtol=0, atol=1e-12)


def write_images(folder: Path, names_sizes: dict[str, tuple[int, int]]) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in names_sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 90, np.uint8))


@pytest.fixture
def coco_set(tmp_path):
    """Two images (one in a subfolder, one without width/height), three categories given
    out of id order, a crowd, a box to clip, two to drop."""
    write_images(tmp_path / "img", {"a.jpg": (100, 80), "sub/b.png": (60, 50)})
    data = {
        "images": [{"id": 42, "file_name": "sub/b.png"},
                   {"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 12, "name": "zebra"}, {"id": 3, "name": "cat"},
                       {"id": 5, "name": "traffic light"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 12, "bbox": [0.5, 1.5, 20.25, 10], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [90, 70, 20, 20]},       # clipped
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [5, 5, 0, 10]},          # w = 0
            {"id": 5, "image_id": 42, "category_id": 12, "bbox": [70, 10, 5, 5]},       # outside
            {"id": 6, "image_id": 42, "category_id": 3, "bbox": [1, 2, 3, 4]},
        ],
    }
    path = tmp_path / "instances_mini.json"
    path.write_text(json.dumps(data))
    return path, tmp_path / "img", data


def test_coco_dataset_reads_classes_crowds_and_boxes(coco_set):
    path, images, _ = coco_set
    ds = COCODataset(path, images)
    assert ds.classes == ("cat", "traffic light", "zebra")  # category ids 3, 5, 12
    assert ds.category_ids == (3, 5, 12)
    assert ds.ids == ["7", "42"] and ds.split == "instances_mini" and len(ds) == 2
    assert ds.name == "instances_mini:instances_mini"
    a = ds.annotation("7")
    assert (a.width, a.height) == (100, 80)
    assert a.boxes.tolist() == [[10, 20, 40, 60], [0.5, 1.5, 20.75, 11.5], [90, 70, 100, 80]]
    assert a.labels.tolist() == [0, 2, 1] and a.difficult.tolist() == [False, True, False]
    assert not a.truncated.any()
    b = ds.annotation("42")  # no size in the file: read from the image
    assert (b.width, b.height) == (60, 50) and b.boxes.tolist() == [[1, 2, 4, 6]]
    actions = sorted((i.image_id, i.action, i.voc_box) for i in ds.box_issues)
    assert actions == [("42", "dropped", (70.0, 10.0, 5.0, 5.0)), ("7", "clipped", (90.0, 70.0, 20.0, 20.0)),
                       ("7", "dropped", (5.0, 5.0, 0.0, 10.0))]
    assert ds.load_image("42").shape == (50, 60, 3)
    assert ds.image_path("42") == images / "sub" / "b.png"
    assert COCODataset(path, images, ids=["42"]).ids == ["42"]
    assert COCODataset(path, images, limit=1).ids == ["7"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: "{not json", "malformed JSON (line 1, column 2"),
    (lambda d: {**d, "annotations": None}, "'annotations' is not a list"),
    (lambda d: {k: v for k, v in d.items() if k != "categories"}, "'categories' is missing"),
    (lambda d: {**d, "annotations": d["annotations"] + [
        {"id": 9, "image_id": 7, "category_id": 4, "bbox": [1, 1, 2, 2]}]}, "unknown category id 4"),
    (lambda d: {**d, "annotations": [{"id": 9, "image_id": 8, "category_id": 3, "bbox": [1, 1, 2, 2]}]},
     "image_id 8 is not in 'images'"),
    (lambda d: {**d, "annotations": [{"id": 9, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2]}]},
     "is not four finite numbers"),
    (lambda d: {**d, "categories": d["categories"] + [{"id": 99, "name": "cat"}]}, "both named 'cat'"),
    (lambda d: {**d, "images": d["images"] + [{"id": 1, "file_name": "../x.jpg"}]},
     "must be a relative path inside the image folder"),
    (lambda d: [], "the top level is not an object"),
])
def test_bad_coco_files_get_clear_errors(coco_set, mutate, message):
    path, images, data = coco_set
    bad = mutate(json.loads(json.dumps(data)))
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(DataError) as e:
        COCODataset(path, images)
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_image_file_and_unknown_ids(coco_set, tmp_path):
    path, images, _ = coco_set
    (images / "a.jpg").unlink()
    ds = COCODataset(path, images)
    with pytest.raises(DataError, match="a.jpg: image file missing"):
        ds.load_image("7")
    with pytest.raises(DataError, match="listed ids are not image ids"):
        COCODataset(path, images, ids=["7", "000007x"])
    with pytest.raises(DataError, match="COCO annotation file not found"):
        COCODataset(tmp_path / "nope.json", images)
    with pytest.raises(DataError, match="image folder does not exist"):
        COCODataset(path, tmp_path / "nope")


def test_dataset_options_need_exactly_one_data_set(coco_set, make_voc, capsys):
    path, images, _ = coco_set
    root = make_voc(n_images=2)
    assert run("data-stats", "--json") == 2
    assert "exactly one data set" in capsys.readouterr().err
    assert run("data-stats", "--voc", str(root), "--coco", str(path), "--images", str(images)) == 2
    assert "exactly one data set" in capsys.readouterr().err
    assert run("data-stats", "--coco", str(path)) == 2
    assert "--coco needs --images" in capsys.readouterr().err
    assert run("data-stats", "--coco", str(path), "--images", str(images), "--split", "val") == 2
    assert "--split apply to --voc only" in capsys.readouterr().err
    assert run("data-stats", "--voc", str(root), "--images", str(images)) == 2
    assert "--images applies to --coco only" in capsys.readouterr().err
    assert run("data-stats", "--coco", str(path), "--images", str(images), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 2 and stats["objects"] == 4 and stats["difficult"] == 1
    assert stats["boxes_clipped"] == 1 and stats["boxes_dropped"] == 2
    assert stats["per_class"]["traffic light"]["objects"] == 1
    path.write_text("{")
    assert run("data-stats", "--coco", str(path), "--images", str(images)) == 1
    err = capsys.readouterr().err
    assert "malformed JSON" in err and "Traceback" not in err


def test_voc_to_coco_and_back_gives_the_same_ground_truth(make_voc, tmp_path, capsys):
    root = make_voc(n_images=4)
    ann = root / "Annotations" / "000001.xml"  # add a difficult object and a box to clip
    ann.write_text(ann.read_text().replace(
        "</annotation>", "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>3</xmin>"
        "<ymin>4</ymin><xmax>50</xmax><ymax>200</ymax></bndbox></object></annotation>"))
    out = tmp_path / "voc.json"
    assert run("convert", "--voc", str(root), "--classes", str(_classes(tmp_path)), "--out", str(out)) == 0
    assert "4 images, 5 objects (1 crowd / difficult), 2 categories" in capsys.readouterr().out
    voc = VOCDataset(root, classes=("cat", "dog"))
    coco = COCODataset(out, root / "JPEGImages")
    assert coco.classes == voc.classes
    data = json.loads(out.read_text())
    assert [im["sppdet_id"] for im in data["images"]] == voc.ids
    for k, image_id in enumerate(voc.ids, start=1):
        a, b = voc.annotation(image_id), coco.annotation(str(k))
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.difficult, b.difficult) and (a.width, a.height) == (b.width, b.height)
        assert np.array_equal(coco.load_image(str(k)), voc.load_image(image_id))
    assert coco.annotation("2").boxes[-1].tolist() == [2, 3, 50, 120]  # clipped on the VOC side
    assert dataset_to_coco(coco, root / "JPEGImages")["annotations"] == data["annotations"]


def _classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n")
    return path


def test_coco_eval_of_a_converted_file_equals_the_in_memory_coco_metrics(make_voc, tmp_path):
    """The official evaluation (the file's own ground truth) and sppdet's in-memory COCO
    metrics of the VOC set agree number for number on a converted file."""
    from sppdet.evaluation.coco import coco_evaluate, coco_evaluate_dataset

    root = make_voc(n_images=6)
    voc = VOCDataset(root, classes=("cat", "dog"))
    out = tmp_path / "voc.json"
    out.write_text(json.dumps(dataset_to_coco(voc)))
    coco = COCODataset(out, root / "JPEGImages")
    rng = np.random.default_rng(1)
    dets_voc, dets_coco = {}, {}
    for k, name in enumerate(voc.classes):
        ids, scores, boxes = [], [], []
        for n, image_id in enumerate(voc.ids):
            gt = voc.annotation(image_id).boxes
            for box in np.concatenate([gt + rng.normal(0, 4, gt.shape), gt[:0]]):
                ids.append(n)
                scores.append(float(rng.uniform()))
                boxes.append(box)
            ids.append(n)
            scores.append(float(rng.uniform()))
            boxes.append([5, 5, 60, 60])
        boxes = np.array(boxes)
        dets_voc[name] = ClassDetections(np.array([voc.ids[i] for i in ids]), np.array(scores), boxes)
        dets_coco[name] = ClassDetections(np.array([str(i + 1) for i in ids]), np.array(scores), boxes)
    a = coco_evaluate(dets_voc, list(voc.annotations()), voc.classes)
    b = coco_evaluate_dataset(dets_coco, coco)
    assert 0 < a["AP"] < 1
    for key in ("AP", "AP50", "AP75", "AR_100", "AP_per_class"):
        assert a[key] == b[key], key
