"""flrdf.wsol_metrics: MaxBoxAccV2 as wsolevaluation defines it, on hand-built maps whose answer is known."""

import cv2
import numpy as np
import pytest

from flrdf.wsol_metrics import (BoxAccumulator, best_iou_per_threshold, boxes_at_thresholds, cam_thresholds,
                                max_box_acc_v2, multiple_iou, normalize_scoremap, resize_box, scoremap_to_frame)

T = cam_thresholds()


def test_thresholds_are_arange_0_1_step_001():
    assert len(T) == 100 and T[0] == 0 and T[-1] == pytest.approx(0.99)
    assert np.array_equal(T, np.arange(0, 1, 0.01))


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
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    f = scoremap_to_frame(m)
    assert f.shape == (224, 224) and f.min() == 0 and f.max() == 1
    expected = normalize_scoremap(cv2.resize(m, (224, 224), interpolation=cv2.INTER_CUBIC))
    assert np.array_equal(f, expected)
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
