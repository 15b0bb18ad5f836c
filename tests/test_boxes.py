import pytest
import torch
import torch.nn.functional as F

from flrdf.boxes import (box_iou, boxes_from_maps, centre_boxes, crop_resize, largest_component,
                         mask_to_boxes, normalize_maps, scale_boxes)


def blob_map(h, w, rects):
    m = torch.zeros(h, w)
    for (r0, r1, c0, c1, v) in rects:
        m[r0:r1, c0:c1] = v
    return m


def test_single_blob_box_exact_scaling():
    m = blob_map(14, 14, [(3, 7, 5, 10, 1.0)])  # rows 3..6, cols 5..9
    box = boxes_from_maps(m[None], 0.5, (448, 448))[0]
    assert box.tolist() == [5 * 32, 3 * 32, 10 * 32, 7 * 32]


def test_non_square_scaling_is_exact():
    m = blob_map(3, 2, [(1, 2, 1, 2, 1.0)])
    box = boxes_from_maps(m[None], 0.5, (96, 64))[0]
    assert box.tolist() == [32.0, 32.0, 64.0, 64.0]


def test_two_blobs_keep_largest():
    m = blob_map(14, 14, [(0, 2, 0, 2, 1.0), (6, 12, 6, 13, 0.9)])
    box = boxes_from_maps(m[None], 0.5, (14, 14))[0]
    assert box.tolist() == [6, 6, 13, 12]


def test_diagonal_pixels_are_connected():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    for i in range(4):
        mask[0, i, i] = True
    mask[0, 5, 0] = True
    kept = largest_component(mask)
    assert kept[0].sum() == 4 and not kept[0, 5, 0]


def test_snake_component_converges():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 0::2, :] = True
    mask[0, 1, 8] = mask[0, 3, 0] = mask[0, 5, 8] = mask[0, 7, 0] = True
    mask[0, 2, 0] = True
    kept = largest_component(mask)
    assert torch.equal(kept, mask)


def test_empty_and_constant_maps_give_whole_image():
    maps = torch.stack([torch.zeros(7, 7), torch.full((7, 7), 3.0)])
    boxes = boxes_from_maps(maps, 0.5, (100, 80))
    assert boxes.tolist() == [[0, 0, 80, 100], [0, 0, 80, 100]]


def test_box_touching_borders():
    m = blob_map(10, 10, [(0, 10, 7, 10, 1.0)])
    assert boxes_from_maps(m[None], 0.5, (10, 10))[0].tolist() == [7, 0, 10, 10]


def test_batched_boxes_match_one_by_one():
    torch.manual_seed(0)
    maps = torch.rand(6, 9, 11)
    batched = boxes_from_maps(maps, 0.6, (90, 110), upsample=2)
    single = torch.cat([boxes_from_maps(m[None], 0.6, (90, 110), upsample=2) for m in maps])
    assert torch.equal(batched, single)


def test_normalize_maps():
    m = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])
    assert normalize_maps(m).flatten().tolist() == [0.0, 0.25, 0.5, 1.0]


def test_mask_to_boxes_known():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 2] = True
    assert mask_to_boxes(mask, (40, 40))[0].tolist() == [20, 10, 30, 30]


def test_crop_resize_reproduces_pattern():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 40, 60)
    box = torch.tensor([[10.0, 8.0, 30.0, 28.0]])  # 20 x 20 region
    out = crop_resize(img, box, (40, 40))
    ref = F.interpolate(img[:, :, 8:28, 10:30], size=(40, 40), mode="bilinear", align_corners=False)
    # interior samples are identical; the outer ring may read neighbouring pixels of the full image
    assert torch.allclose(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)
    whole = crop_resize(img, torch.tensor([[0.0, 0.0, 60.0, 40.0]]))
    assert torch.allclose(whole, img, atol=1e-5)


def test_crop_resize_checkerboard_integer_upscale():
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    img = F.pad(board.float(), (4, 4, 4, 4))[None, None].repeat(1, 3, 1, 1)  # 16 x 16, board at 4..12
    out = crop_resize(img, torch.tensor([[4.0, 4.0, 12.0, 12.0]]), (8, 8))
    assert torch.allclose(out[0, 0], board.float(), atol=1e-6)


def test_box_iou_and_scale():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0, 0, 1, 1]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0], [2, 2, 3, 3]])
    assert torch.allclose(box_iou(a, b), torch.tensor([50 / 150, 1.0, 0.0]))
    assert scale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (100, 50), (200, 200)).tolist() == [[40, 40, 120, 80]]
    assert centre_boxes(2, (100, 200)).tolist() == [[50, 25, 150, 75]] * 2


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.zeros(1, 1, 4, 4)])
def test_bad_shapes(bad):
    with pytest.raises(ValueError):
        boxes_from_maps(bad, 0.5, (4, 4))
