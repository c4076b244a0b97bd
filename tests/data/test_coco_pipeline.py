"""The whole pipeline on a COCO JSON made from 12 real VOC images matches the VOC-format run:
the same proposal and feature files, the same trained heads, the same evaluation numbers."""

from __future__ import annotations

import json

import pytest

from sppdet.cli import main

pytestmark = pytest.mark.slow


def run(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as e:
        assert not e.code, f"sppdet {' '.join(args)} exited with {e.code}"


def test_coco_json_of_12_voc_images_matches_the_voc_run(voc2007_root, torch_home, tmp_path, capsys):
    t = tmp_path
    voc = ["--voc", str(voc2007_root), "--split", "train", "--limit", "12"]
    run("convert", *voc, "--out", str(t / "voc12.json"))
    coco = ["--coco", str(t / "voc12.json"), "--images", str(voc2007_root / "JPEGImages")]
    ids = {im["sppdet_id"]: str(im["id"]) for im in json.loads((t / "voc12.json").read_text())["images"]}
    props = ["--method", "edgeboxes", "--max-boxes", "100", "--workers", "2", "--no-progress"]
    feats = ["--backbone", "mobilenet_v2", "--scales", "224", "--threads", "2", "--device", "cpu"]
    for name, data in (("voc", voc), ("coco", coco)):
        run("proposals", *data, *props, "--out", str(t / f"{name}_props"))
        run("extract", *data, "--proposals", str(t / f"{name}_props"), "--out", str(t / f"{name}_feats"), *feats)
        run("train-svm", *data, "--features", str(t / f"{name}_feats"), "--proposals",
            str(t / f"{name}_props"), "--out", str(t / f"{name}_model"), "--quiet", "--device", "cpu")
        run("eval", *data, "--model", str(t / f"{name}_model"), "--features", str(t / f"{name}_feats"),
            "--proposals", str(t / f"{name}_props"), "--device", "cpu", "--json", str(t / f"{name}.json"),
            "--out", str(t / f"{name}_eval"))
    capsys.readouterr()
    for voc_id, coco_id in ids.items():  # cache files are the same bytes under the other id
        for cache in ("props", "feats"):
            assert (t / f"voc_{cache}" / f"{voc_id}.npz").read_bytes() == \
                (t / f"coco_{cache}" / f"{coco_id}.npz").read_bytes()
    assert (t / "voc_model" / "heads.npz").read_bytes() == (t / "coco_model" / "heads.npz").read_bytes()
    a, b = (json.loads((t / f"{n}.json").read_text()) for n in ("voc", "coco"))
    assert a["mAP"] > 0.2 and a["coco"]["AP50"] > 0.2
    for key in ("mAP", "AP", "mAP_area", "AP_area", "num_gt", "num_det", "coco"):
        assert a[key] == b[key], key
    results = json.loads((t / "coco_eval" / "coco_results_voc12.json").read_text())
    assert len(results) == sum(a["num_det"].values())
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    # The results file, evaluated by plain pycocotools against the converted file, gives the same AP.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(t / "voc12.json"))
    ev = COCOeval(gt, gt.loadRes(str(t / "coco_eval" / "coco_results_voc12.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(a["coco"]["AP"], abs=1e-12)
    assert ev.stats[1] == pytest.approx(a["coco"]["AP50"], abs=1e-12)
