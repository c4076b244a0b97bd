"""Agreement with a line-by-line re-implementation of the VOC 2007 devkit (VOCevaldet.m),
on many random synthetic cases: the vectorised code must match it exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sppdet.boxes import box_iou, voc_to_internal
from sppdet.detections import ClassDetections
from sppdet.evaluation.voc import evaluate_class, voc07_interpolated_precision


def devkit_iou(bb, bbgt):
    """VOCevaldet.m's overlap of two VOC 1-based inclusive boxes (None: no intersection)."""
    bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
    iw = bi[2] - bi[0] + 1
    ih = bi[3] - bi[1] + 1
    if iw > 0 and ih > 0:
        ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
              + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
        return iw * ih / ua
    return None


def devkit_evaluate(ids, confidence, BB, gt, minoverlap=0.5, kinds=None):
    """VOCevaldet.m, loop for loop. gt: image -> (VOC boxes, difficult). NaN precision for
    0/0 as in MATLAB. ``kinds`` (a list) collects each ranked detection's outcome."""
    si = sorted(range(len(confidence)), key=lambda d: -confidence[d])  # stable, like MATLAB
    det = {img: [False] * len(g[0]) for img, g in gt.items()}
    npos = sum(sum(1 for d in g[1] if not d) for g in gt.values())
    tp, fp = [], []
    for d in si:
        img = ids[d]
        bb = BB[d]
        ovmax, jmax = -math.inf, None
        boxes, diff = gt.get(img, ([], []))
        for j, bbgt in enumerate(boxes):
            ov = devkit_iou(bb, bbgt)
            if ov is not None and ov > ovmax:
                ovmax, jmax = ov, j
        t = f = 0
        kind = "fp"
        if ovmax >= minoverlap:
            kind = "difficult"
            if not diff[jmax]:
                if not det[img][jmax]:
                    t, kind = 1, "tp"
                    det[img][jmax] = True
                else:
                    f, kind = 1, "dup"
            if ovmax == 0.5:
                kind += "@0.5"
        else:
            f = 1
        if kinds is not None:
            kinds.append(kind)
        tp.append(t)
        fp.append(f)
    ctp = np.cumsum(tp, dtype=float)
    cfp = np.cumsum(fp, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = ctp / npos
        prec = ctp / (cfp + ctp)
    return np.array(tp, float), np.array(fp, float), rec, prec


def devkit_ap07(rec, prec):
    """for t=0:0.1:1, p=max(prec(rec>=t)) (MATLAB's max ignores NaN), ap=ap+p/11."""
    ts = [k * 0.1 for k in range(6)] + [1 - k * 0.1 for k in range(4, -1, -1)]  # MATLAB colon
    ps = []
    for t in ts:
        cand = [p for r, p in zip(rec, prec) if r >= t and not math.isnan(p)]
        ps.append(max(cand) if cand else 0.0)
    return ps, sum(p / 11 for p in ps)


def devkit_ap_area(rec, prec):
    """VOCap.m: monotone envelope, then the sum over recall steps."""
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(x for x in (mpre[i], mpre[i + 1]) if not math.isnan(x)) \
            if not (math.isnan(mpre[i]) and math.isnan(mpre[i + 1])) else math.nan
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def random_voc_box(rng, size=60):
    x1, y1 = rng.integers(1, size, 2)
    w, h = rng.integers(0, 25, 2)
    return [int(x1), int(y1), int(x1 + w), int(y1 + h)]


def random_case(seed):
    """Images with 0-4 VOC boxes (some difficult, some exact duplicates, so IoU ties occur),
    detections jittered from them or random, scores with ties."""
    rng = np.random.default_rng(seed)
    gt, ids, scores, boxes = {}, [], [], []
    for i in range(int(rng.integers(1, 6))):
        img = f"{i:06d}"
        g = [random_voc_box(rng) for _ in range(int(rng.integers(0, 5)))]
        if g and rng.random() < 0.3:
            g.append(list(g[0]))                              # duplicate box: IoU tie
        diff = [bool(rng.random() < 0.25) for _ in g]
        gt[img] = (g, diff)
        for b in g:
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.integers(-3, 4, 4)
                jb = [b[0] + jit[0], b[1] + jit[1], max(b[0] + jit[0], b[2] + jit[2]),
                      max(b[1] + jit[1], b[3] + jit[3])]
                ids.append(img); boxes.append([int(v) for v in jb])
                scores.append(float(rng.integers(0, 8)) / 4)
        for _ in range(int(rng.integers(0, 3))):
            ids.append(img); boxes.append(random_voc_box(rng)); scores.append(float(rng.integers(0, 8)) / 4)
    if rng.random() < 0.2:                                    # detections on an image without gt
        ids.append("999999"); boxes.append(random_voc_box(rng)); scores.append(1.0)
    return gt, ids, scores, boxes


def test_plus_one_iou_equals_internal_iou_exactly():
    rng = np.random.default_rng(0)
    a = [random_voc_box(rng, 30) for _ in range(300)]
    b = [random_voc_box(rng, 30) for _ in range(300)]
    ours = box_iou(voc_to_internal(a), voc_to_internal(b))
    ref = np.array([[devkit_iou(x, y) or 0.0 for y in b] for x in a])
    assert (ours == ref).all()
    assert (ref == 0.5).any()  # the exact-0.5 boundary is among them


@pytest.mark.parametrize("seed", range(300))
def test_matches_devkit_on_random_cases(seed):
    gt, ids, scores, boxes = random_case(seed)
    npos = sum(sum(1 for d in g[1] if not d) for g in gt.values())
    ref_tp, ref_fp, ref_rec, ref_prec = devkit_evaluate(ids, scores, boxes, gt)
    dets = (ClassDetections(ids, scores, voc_to_internal(boxes)) if ids else ClassDetections.empty())
    ours = evaluate_class(dets, {k: (voc_to_internal(g), np.array(d, bool)) for k, (g, d) in gt.items()})
    assert ours.npos == npos
    assert ours.tp.tolist() == ref_tp.tolist() and ours.fp.tolist() == ref_fp.tolist()
    if npos == 0:
        assert np.isnan(ours.ap07) and np.isnan(ours.ap_area)
        return
    assert ours.rec.tolist() == ref_rec.tolist()
    # precision: identical where the devkit's is defined; the devkit's NaN (0/0) is 0 here
    assert ours.prec.tolist() == np.nan_to_num(ref_prec, nan=0.0).tolist()
    ref_ps, ref_ap07 = devkit_ap07(ref_rec.tolist(), ref_prec.tolist())
    assert voc07_interpolated_precision(ours.rec, ours.prec).tolist() == ref_ps
    assert ours.ap07 == pytest.approx(ref_ap07, abs=1e-15)
    ref_area = devkit_ap_area(ref_rec.tolist(), ref_prec.tolist())
    if math.isnan(ref_area):          # all detections on difficult boxes: devkit NaN, here 0
        assert ours.ap_area == 0.0
    else:
        assert ours.ap_area == pytest.approx(ref_area, abs=1e-15)


def test_random_cases_cover_the_interesting_situations():
    """The random cases must contain duplicates, difficult hits, matches at IoU exactly 0.5,
    score ties and misses, or the agreement above proves little."""
    kinds, ties = [], 0
    for seed in range(300):
        gt, ids, scores, boxes = random_case(seed)
        devkit_evaluate(ids, scores, boxes, gt, kinds=kinds)
        ties += len(scores) - len(set(scores))
    outcomes = {k.split("@")[0] for k in kinds}
    assert outcomes == {"tp", "fp", "dup", "difficult"}
    assert any(k.endswith("@0.5") for k in kinds) and ties > 0
