"""The box follows the pixels through resize, crop and flip: a white rectangle drawn at the
box on black must come out exactly where the transformed box says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flrdf.data import IMAGENET_MEAN, IMAGENET_STD, build_transform


def rectangle_image(width: int, height: int, box) -> Image.Image:
    arr = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = 255
    return Image.fromarray(arr)


def white_bounds(tensor: torch.Tensor) -> list[int]:
    ys, xs = np.nonzero(tensor[0].numpy() > 0.5)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_test_transform_exact_box():
    box = (40, 20, 120, 60)
    image = rectangle_image(200, 100, box)  # resize 100: x scaled by 0.5, y by 1.0; centre crop 80: offset 10
    transform = build_transform(False, 100, 80, mean=(0, 0, 0), std=(1, 1, 1))
    tensor, out = transform(image, box)
    assert tensor.shape == (3, 80, 80) and tensor.dtype == torch.float32
    assert out.dtype == torch.float32
    assert out.tolist() == [10.0, 10.0, 50.0, 50.0]
    assert white_bounds(tensor) == [10, 10, 50, 50]
    again, none = transform(image, None)
    assert none is None and torch.equal(again, tensor)


def test_box_clipped_to_the_crop():
    transform = build_transform(False, 100, 80, mean=(0, 0, 0), std=(1, 1, 1))
    _, out = transform(rectangle_image(100, 100, (0, 0, 1, 1)), (2.0, 50.0, 99.0, 95.0))
    assert out.tolist() == [0.0, 40.0, 80.0, 80.0]


def test_train_transform_box_follows_random_crop_and_flip():
    box = (12, 30, 60, 70)  # off-centre, so a flip that forgot the box would be caught
    image = rectangle_image(160, 120, box)
    transform = build_transform(True, 80, 64, mean=(0, 0, 0), std=(1, 1, 1))
    seen_flip = seen_plain = False
    for seed in range(12):
        torch.manual_seed(seed)
        tensor, out = transform(image, box)
        bounds = white_bounds(tensor)
        assert np.abs(np.array(bounds) - out.numpy()).max() <= 1.0, (seed, bounds, out)
        seen_flip |= bool(out[0] > 64 - out[2])  # box now nearer the right edge
        seen_plain |= bool(out[0] < 64 - out[2])
    assert seen_flip and seen_plain
    torch.manual_seed(3)
    first = transform(image, box)
    torch.manual_seed(3)
    second = transform(image, box)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_normalisation_and_arguments():
    grey = Image.new("RGB", (10, 10), (128, 128, 128))
    tensor, _ = build_transform(False, 10, 8)(grey, None)
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert tensor.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match=r"crop \(9\) must not exceed resize \(8\)"):
        build_transform(True, 8, 9)
    with pytest.raises(ValueError, match="positive integers"):
        build_transform(True, 0, 0)
