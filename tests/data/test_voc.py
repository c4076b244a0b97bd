"""The VOC data layer: parsing, the box rule, errors, and the real shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sppdet.boxes import internal_to_voc, voc_to_internal
from sppdet.data import VOC_CLASSES, VOCDataset, read_class_file, read_id_list, resolve_root
from sppdet.data.splits import random_split
from sppdet.data.stats import dataset_stats
from sppdet.errors import DataError
from tests.conftest import write_voc_xml


def test_voc_round_trip_and_devkit_area(rng=np.random.default_rng(0)):
    voc = rng.integers(1, 500, (200, 4)).astype(float)
    voc[:, 2:] = voc[:, :2] + rng.integers(0, 300, (200, 2))
    internal = voc_to_internal(voc)
    np.testing.assert_array_equal(internal_to_voc(internal), voc)
    devkit_area = (voc[:, 2] - voc[:, 0] + 1) * (voc[:, 3] - voc[:, 1] + 1)
    internal_area = (internal[:, 2] - internal[:, 0]) * (internal[:, 3] - internal[:, 1])
    np.testing.assert_array_equal(internal_area, devkit_area)


def test_parse_synthetic_dataset(make_voc):
    root = make_voc(n_images=4, classes=("cat", "dog"))
    ds = VOCDataset(root, split="train", classes=("cat", "dog"))
    assert ds.ids == ["000000", "000001", "000002", "000003"]
    ann = ds.annotation("000001")
    assert (ann.width, ann.height) == (160, 120)
    assert ann.labels.tolist() == [1]
    assert ann.difficult.tolist() == [False] and ann.truncated.tolist() == [False]
    image = ds.load_image("000001")
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    # The drawn rectangle covers exactly the internal box's pixels.
    x1, y1, x2, y2 = ann.boxes[0].astype(int)
    inside = image[y1 + 2:y2 - 2, x1 + 2:x2 - 2].astype(int)
    assert inside[..., 1].mean() > 150  # drawn green channel 200, background < 60


def test_limit_ids_and_year_folder(make_voc, tmp_path):
    root = make_voc(n_images=5)
    assert len(VOCDataset(root, split="train", limit=2, classes=("cat", "dog"))) == 2
    ds = VOCDataset(root.parent, year="2007", ids=["000003"], classes=("cat", "dog"))
    assert ds.root == root and ds.ids == ["000003"]
    assert resolve_root(root.parent) == root  # a single year folder is found


def test_optional_elements_default(tmp_path, make_voc):
    root = make_voc(n_images=1)
    # No difficult, truncated or pose element at all.
    (root / "Annotations" / "000000.xml").write_text(
        "<annotation><size><width>160</width><height>120</height></size><object><name>cat</name>"
        "<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "</annotation>")
    ann = VOCDataset(root, classes=("cat", "dog")).annotation("000000")
    assert ann.difficult.tolist() == [False] and ann.truncated.tolist() == [False]
    np.testing.assert_array_equal(ann.boxes, [[9, 19, 50, 60]])


def test_box_rule_clips_and_drops(make_voc):
    root = make_voc(n_images=1)
    write_voc_xml(root / "Annotations" / "000000.xml", "000000.jpg", 160, 120, [
        ("cat", (0, -5, 170, 50), 0),      # outside: clipped to [1, 1, 160, 50]
        ("dog", (30, 30, 30, 60), 0),      # one-pixel line: dropped
        ("dog", (50, 40, 20, 60), 1),      # inverted: dropped
        ("dog", (20, 20, 40, 40), 1),      # fine, difficult
    ])
    ds = VOCDataset(root, classes=("cat", "dog"))
    ann = ds.annotation("000000")
    np.testing.assert_array_equal(internal_to_voc(ann.boxes), [[1, 1, 160, 50], [20, 20, 40, 40]])
    assert ann.difficult.tolist() == [False, True]
    assert sorted(i.action for i in ds.box_issues) == ["clipped", "dropped", "dropped"]


@pytest.mark.parametrize("content, message", [
    ("<annotation><object>", "malformed XML"),
    ("<annotation><size><width>10</width><height>10</height></size><object><name>cat</name>"
     "</object></annotation>", "missing <bndbox>"),
    ("<annotation><size><width>10</width><height>10</height></size><object><name>cat</name>"
     "<bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object>"
     "</annotation>", "not numbers"),
    ("<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
     "<ymax>3</ymax></bndbox></object></annotation>", "no usable <size>"),
])
def test_malformed_xml_errors_name_the_file(make_voc, content, message):
    root = make_voc(n_images=1)
    (root / "Annotations" / "000000.xml").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        VOCDataset(root, classes=("cat", "dog")).annotation("000000")
    assert "000000.xml" in str(info.value)


def test_missing_annotation_and_image(make_voc):
    root = make_voc(n_images=2)
    (root / "Annotations" / "000001.xml").unlink()
    (root / "JPEGImages" / "000000.jpg").write_bytes(b"not a jpeg")
    ds = VOCDataset(root, classes=("cat", "dog"))
    with pytest.raises(DataError, match="000001.xml: annotation file missing"):
        ds.annotation("000001")
    with pytest.raises(DataError, match="000000.jpg: cannot decode image"):
        ds.load_image("000000")
    with pytest.raises(DataError, match="image file missing"):
        ds.load_image("000009")


def test_unknown_class_names_found_classes(make_voc):
    root = make_voc(n_images=3, classes=("RBC", "WBC"))
    with pytest.raises(DataError) as info:
        VOCDataset(root).annotation("000000")
    msg = str(info.value)
    assert "'RBC' is not in the class list" in msg and "found in this split: RBC, WBC" in msg
    assert "--classes" in msg


def test_bad_split_and_root(make_voc, tmp_path):
    root = make_voc(n_images=1)
    with pytest.raises(DataError, match="split 'nope' not found .*splits here: train"):
        VOCDataset(root, split="nope")
    with pytest.raises(DataError, match="does not exist"):
        VOCDataset(tmp_path / "missing")
    with pytest.raises(DataError, match="not a VOC-format data set"):
        VOCDataset(tmp_path)


def test_class_and_id_files(tmp_path):
    (tmp_path / "c.txt").write_text("# comment\nRBC\n\nWBC  # white\n")
    assert read_class_file(tmp_path / "c.txt") == ("RBC", "WBC")
    (tmp_path / "d.txt").write_text("a\na\n")
    with pytest.raises(DataError, match="repeats a"):
        read_class_file(tmp_path / "d.txt")
    (tmp_path / "ids.txt").write_text("000005  1\n000007 -1\n")
    assert read_id_list(tmp_path / "ids.txt") == ["000005", "000007"]
    with pytest.raises(DataError, match="cannot read class list"):
        read_class_file(tmp_path / "none.txt")


def test_random_split_is_seeded_and_disjoint():
    ids = [f"{i:06d}" for i in range(100)]
    train, val = random_split(ids, 20, seed=3)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert random_split(ids, 20, seed=3) == (train, val)
    assert random_split(ids, 20, seed=4)[1] != val


def test_shipped_dev_split_partitions_voc_train(voc2007_root):
    repo = Path(__file__).resolve().parents[2]
    train = read_id_list(repo / "splits" / "voc07_dev_train.txt")
    val = read_id_list(repo / "splits" / "voc07_dev_val.txt")
    full = read_id_list(voc2007_root / "ImageSets" / "Main" / "train.txt")
    assert (len(train), len(val)) == (2000, 500)
    assert sorted(train + val) == sorted(full)
    assert random_split(full, 500, seed=0) == (train, val)


def test_real_voc2007_train_counts(voc2007_root):
    ds = VOCDataset(voc2007_root, split="train")
    stats = dataset_stats(ds, progress=False)
    assert (stats.images, stats.objects, stats.difficult) == (2500, 7843, 1543)
    assert sum(r["objects"] for r in stats.per_class.values()) == 7843
    assert all(stats.per_class[c]["objects"] > 0 for c in VOC_CLASSES)
    # Boxes are inside their images after the rule.
    for image_id in ds.ids[:200]:
        ann = ds.annotation(image_id)
        assert (ann.boxes[:, :2] >= 0).all() and (ann.boxes[:, 2] <= ann.width).all()
        assert (ann.boxes[:, 3] <= ann.height).all()


def test_real_bccd_with_class_file(bccd_root):
    repo = Path(__file__).resolve().parents[2]
    ds = VOCDataset(bccd_root, split="trainval",
                    classes=read_class_file(repo / "splits" / "bccd_classes.txt"))
    stats = dataset_stats(ds, progress=False)
    assert stats.images == 292
    dropped = {(i["image"], i["action"]) for i in stats.box_issues}
    assert ("BloodImage_00338", "dropped") in dropped
    with pytest.raises(DataError, match="not covered: Platelets, RBC, WBC"):
        VOCDataset(bccd_root, split="trainval").annotation(ds.ids[0])
