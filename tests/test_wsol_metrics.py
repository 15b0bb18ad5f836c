"""flrdf.wsol_metrics: MaxBoxAccV2 as wsolevaluation defines it, on hand-built maps whose answer is known."""

import cv2
import numpy as np
import pytest
from wsol_reference import protocol_best_ious, protocol_max_box_acc

from flrdf.wsol_metrics import (BoxAccumulator, best_iou_per_threshold, best_ious, boxes_at_thresholds,
                                cam_thresholds, max_box_acc_v2, multiple_iou, normalize_scoremap, resize_box,
                                scoremap_to_frame, step_name, threshold_step)

T = cam_thresholds("fast")


def test_thresholds_default_to_wsolevaluations_step_and_fast_is_named():
    ref = cam_thresholds()
    assert len(ref) == 1000 and ref[0] == 0 and ref[1] == pytest.approx(0.001) and ref[-1] == pytest.approx(0.999)
    assert len(T) == 100 and T[1] == pytest.approx(0.01) and T[-1] == pytest.approx(0.99)
    assert threshold_step("reference") == 0.001 and threshold_step("fast") == 0.01 and threshold_step("0.05") == 0.05
    assert step_name(0.001) == "reference" and step_name(0.01) == "fast" and step_name(0.05) == "0.05"
    for bad in ("slow", 0, 1.5):
        with pytest.raises(ValueError, match="threshold step"):
            cam_thresholds(bad)


def test_iou_uses_inclusive_pixels():
    assert multiple_iou([[0, 0, 9, 9]], [[0, 0, 9, 9]])[0, 0] == 1.0
    assert multiple_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0, 0] == pytest.approx(50 / 150)
    assert multiple_iou([[0, 0, 9, 9]], [[20, 20, 30, 30]])[0, 0] == 0.0
    assert multiple_iou(np.zeros((2, 4)), [[0, 0, 9, 9], [0, 0, 0, 0]]).shape == (2, 2)


def test_normalisation_and_frame():
    assert not normalize_scoremap(np.full((5, 5), 3.0)).any()          # constant -> zeros
    nan = np.ones((4, 4))
    nan[0, 0] = np.nan
    assert not normalize_scoremap(nan).any()                            # NaN -> zeros
    ramp = np.tile(np.arange(4, dtype=np.float32) + 10, (2, 1))       # 2 rows x 4 columns, bright to the right
    f = scoremap_to_frame(ramp)
    assert f.shape == (224, 224) and f.min() == 0 and f.max() == 1     # min-max normalised in the frame
    assert np.allclose(f[0], f[-1], atol=1e-5)                         # columns stay columns: no transpose
    assert f[:, :20].max() < 0.01 and f[:, -20:].min() > 0.99 and 0.4 < f[:, 112].mean() < 0.6
    # bicubic: one bright cell in a dark 5 x 5 map rings - the dips beside the peak are the new minimum, so
    # the far corners end above 0 (bilinear, area or nearest resizing leave them at exactly 0)
    spot = np.zeros((5, 5), np.float32)
    spot[2, 2] = 1
    g = scoremap_to_frame(spot)
    assert g[112, 112] == 1 and g[0, 0] > 0.05 and g[0, 223] > 0.05
    y, x = np.unravel_index(np.argmin(g), g.shape)
    assert 90 <= x <= 134 or 90 <= y <= 134                             # the dip lies on the peak's cross
    assert resize_box((10.7, 20, 110.9, 50), (448, 224)) == (5, 20, 55, 50)   # int() of the scaled corners


def _two_blobs():
    """A big bright blob (1.0) and a small dim one (0.5); the ground truth is the small one."""
    m = np.zeros((224, 224), np.float32)
    m[10:110, 10:110] = 1.0
    m[150:190, 150:190] = 0.5
    return m, (150, 150, 189, 189)


def test_two_blobs_the_second_is_the_hit():
    m, gt = _two_blobs()
    boxes = boxes_at_thresholds(m, [0.2])[0]
    assert sorted(map(tuple, boxes.tolist())) == [(10, 10, 110, 110), (150, 150, 190, 190)]
    best = best_iou_per_threshold(m, [gt], T)
    hit = 1600 / (41 * 41)                       # the blob's rectangle (x1 = x + w) against the inclusive gt box
    assert best[:50] == pytest.approx(hit)       # 0.5 * 255 = 127 > int(t * 255) for t < 0.5
    assert best[50:].max() < 0.1                 # only the big blob is left
    every = max_box_acc_v2([m], [[gt]])
    assert every["max_box_acc_v2"] == 1.0 and every["best_threshold_iou70"] == 0.0
    largest = max_box_acc_v2([m], [[gt]], multi_contour=False)   # the largest contour is never the hit
    assert largest["max_box_acc_v2"] == 0.0


def test_ring_gives_outer_and_hole_boxes():
    m = np.zeros((224, 224), np.float32)
    cv2.circle(m, (112, 112), 60, 1.0, thickness=12)
    boxes = boxes_at_thresholds(m, [0.5])[0]
    assert len(boxes) == 2                       # RETR_TREE: the outer contour and the hole
    outer = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]))]
    assert tuple(outer) == (46, 46, 179, 179)
    acc = BoxAccumulator()
    acc.add(m, [(46, 46, 178, 178)])             # gt = the ring's extent
    hole = BoxAccumulator()
    hole.add(m, [tuple(boxes[np.argmin(boxes[:, 2] - boxes[:, 0])])])   # gt = the hole: also found
    assert acc.summary()["max_box_acc_v2"] == 1.0 and hole.summary()["max_box_acc_v2"] == 1.0


def test_empty_map_scores_zero_and_gives_the_null_box():
    m = normalize_scoremap(np.zeros((7, 7)))
    boxes = boxes_at_thresholds(scoremap_to_frame(m), T)
    assert all(b.tolist() == [[0, 0, 0, 0]] for b in boxes)
    s = max_box_acc_v2([scoremap_to_frame(m)], [[(20, 20, 200, 200)]])
    assert s["max_box_acc_v2"] == 0.0 and s["n"] == 1


def test_accumulator_averages_over_images_and_ious():
    m, gt = _two_blobs()
    acc = BoxAccumulator()
    acc.add(m, [gt])
    acc.add(np.zeros((224, 224), np.float32), [gt])
    s = acc.summary()
    assert s["max_box_acc_iou30"] == s["max_box_acc_iou50"] == s["max_box_acc_iou70"] == 0.5
    assert s["max_box_acc_v2"] == 0.5
    # a box of IoU between .5 and .7 counts at 30 and 50 only
    half = np.zeros((224, 224), np.float32)
    half[0:100, 0:60] = 1                        # box (0, 0, 60, 100) vs gt (0, 0, 99, 99): IoU 6100/10100
    s2 = max_box_acc_v2([half], [[(0, 0, 99, 99)]])
    assert (s2["max_box_acc_iou30"], s2["max_box_acc_iou50"], s2["max_box_acc_iou70"]) == (1.0, 1.0, 0.0)
    assert s2["max_box_acc_v2"] == pytest.approx(2 / 3)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        boxes_at_thresholds(np.full((4, 4), 2.0), T)
    with pytest.raises(ValueError, match="2-D"):
        scoremap_to_frame(np.zeros((2, 3, 4)))


# ---------------------------------------------------------------- against an independent re-implementation
def _random_cases(seed, n):
    """Maps of several grid sizes and textures (smooth, speckled, one flat) with 1-2 boxes on odd image sizes."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        side = int(rng.choice([7, 14, 28]))
        cam = rng.random((side, side)).astype(np.float32)
        if i % 3 == 0:
            cam = cv2.GaussianBlur(cam, (0, 0), side / 7)
        elif i % 3 == 1:
            cam = cam ** 4                                     # sparse peaks: many contours
        if i == n - 1:
            cam[:] = 0.3                                       # a flat map scores the null box
        w, h = int(rng.integers(150, 500)), int(rng.integers(150, 500))
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
            boxes.append((x0, y0, rng.uniform(x0 + 5, w - 1), rng.uniform(y0 + 5, h - 1)))
        cases.append((cam, boxes, (w, h)))
    return cases


@pytest.mark.parametrize("step", [0.001, 0.01])
def test_matches_an_independent_reimplementation_on_random_maps(step):
    cases = _random_cases(7, 12)
    th = cam_thresholds(step)
    every, largest = BoxAccumulator(th), BoxAccumulator(th, multi_contour=False)
    want = {False: [], True: []}
    for cam, boxes, wh in cases:
        frame = scoremap_to_frame(cam)
        gts = [resize_box(b, wh) for b in boxes]
        got_every, got_largest = best_ious(frame, gts, th)
        ref_every = protocol_best_ious(cam, boxes, wh, step)
        ref_largest = protocol_best_ious(cam, boxes, wh, step, largest_only=True)
        assert got_every == pytest.approx(ref_every, abs=1e-12)
        assert got_largest == pytest.approx(ref_largest, abs=1e-12)
        every.add(frame, gts)
        largest.add(frame, gts)
        want[False].append(ref_every)
        want[True].append(ref_largest)
    for acc, key in ((every, False), (largest, True)):
        want_acc = protocol_max_box_acc(want[key])
        s = acc.summary()
        got = {k: s[k] for k in want_acc}
        assert got == pytest.approx(want_acc, abs=1e-6)
    # the random maps are not trivial: IoUs vary, the every-contour and largest-contour rules disagree somewhere
    assert np.ptp(np.concatenate(want[False])) > 0.3
    assert any(not np.array_equal(a, b) for a, b in zip(want[False], want[True]))
