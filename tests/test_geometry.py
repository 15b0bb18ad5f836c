"""Box geometry (issue 12, sections 1-2): feature cells map to pixels by their receptive-field
centres, and every method's map is boxed on the one grid the model's real stride gives."""

import numpy as np
import pytest
import torch

from flrdf.boxes import BoxGrid, box_grid, boxes_from_maps, feature_size, rf_centre
from flrdf.cams import box_grid as model_box_grid, cam_boxes, compute_cams
from flrdf.config import ModelConfig
from flrdf.model import FLRDF


def test_feature_size_follows_resnet_downsampling():
    # each stride-2 layer gives ceil(n / 2): 112 -> 56 -> 28 -> 14 -> 7 (-> 4)
    assert feature_size(112, 16) == 7 and feature_size(112, 32) == 4
    assert feature_size(448, 32) == 14 and feature_size(448, 16) == 28 and feature_size(100, 32) == 4
    net = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, layer4_stride=1), 2).eval()
    with torch.no_grad():
        assert net.raw_features(torch.zeros(1, 3, 100, 76))[0].shape[-2:] == (feature_size(100, 16), feature_size(76, 16))


@pytest.mark.parametrize("stride", [16, 32])
def test_a_single_cell_gives_a_box_centred_on_its_receptive_field(stride):
    """A response at feature cell (i, j) alone: the box is one stride wide, centred on pixel j*s + c."""
    h = w = 7
    hw = (h * stride, w * stride)
    grid = box_grid(stride, hw)
    assert grid.shape == (7, 7) and grid.pitch == stride and grid.origin == rf_centre(stride)
    for i, j in [(3, 4), (2, 5), (5, 1)]:
        m = torch.zeros(1, h, w)
        m[0, i, j] = 1.0
        box = boxes_from_maps(m, 0.5, hw, grid=grid)[0]
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        assert cx == pytest.approx(j * stride + rf_centre(stride))
        assert cy == pytest.approx(i * stride + rf_centre(stride))
        assert float(box[2] - box[0]) == pytest.approx(stride)  # the box keeps one stride's width
        # the old rule (cells tile the image) put it half a stride right and down
        old = boxes_from_maps(m, 0.5, hw)[0]
        assert float(old[0] + old[2]) / 2 - cx == pytest.approx(stride / 2 - rf_centre(stride))


def test_upsampled_map_keeps_the_centre():
    """Bilinear upsampling by 4 before thresholding: a peak at cell (3, 4) still boxes around its centre."""
    s, up = 16, 4
    hw = (112, 112)
    m = torch.zeros(1, 7, 7)
    m[0, 3, 4] = 1.0
    grid = box_grid(s, hw, up)
    assert grid.shape == (28, 28) and grid.pitch == 4.0
    assert grid.origin == pytest.approx(rf_centre(s) - s / 2 + s / (2 * up))
    box = boxes_from_maps(m, 0.3, hw, upsample=up, grid=grid)[0]
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    assert cx == pytest.approx(4 * s + rf_centre(s)) and cy == pytest.approx(3 * s + rf_centre(s))
    with pytest.raises(ValueError, match="box grid"):  # a grid that does not fit the map is refused
        boxes_from_maps(m, 0.3, hw, upsample=up, grid=box_grid(s, hw, 2))


def test_border_regions_are_clipped_to_the_image():
    grid = BoxGrid((4, 4), 32.0, 0.5, (112, 112))  # stride 32 on 112 px: the last cell reaches 112.5
    m = torch.zeros(1, 4, 4)
    m[0, :, 0] = 1.0
    m[0, 3, :] = 1.0
    box = boxes_from_maps(m, 0.5, (112, 112), grid=grid)[0]
    assert box.tolist() == [0.0, 0.0, 112.0, 112.0]  # [0.5 - 16, 96.5 + 16] clipped
    m = torch.zeros(1, 4, 4)
    m[0, 1:3, 1:3] = 1.0
    assert boxes_from_maps(m, 0.5, (112, 112), grid=grid)[0].tolist() == [16.5, 16.5, 80.5, 80.5]


def test_model_boxes_use_the_grid():
    """FLRDF.localize's boxes are boxes_from_maps on the model's own grid (no other path)."""
    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, layer4_stride=1, tau=0.4), 3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    grid = model.box_grid((64, 64))
    assert grid == model_box_grid(model, (64, 64)) and grid.pitch == 16 / model.cfg.map_upsample
    ref = boxes_from_maps(out.loc_map, 0.4, (64, 64), upsample=model.cfg.map_upsample, normalize=False, grid=grid)
    assert torch.equal(out.boxes, ref)


def test_loc_eval_cam_box_equals_inspect_with_layer4_stride_1(tmp_path):
    """The same image, tau and method: loc-eval's CAM box is Inspect's (layer4_stride=1, 16-px stride;
    the old loc-eval boxed CAMs on a stride-32 grid and differed from Inspect)."""
    from flrdf.config import load_config
    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.checkpoint import load_model, save_model_file
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.localization import evaluate_localization
    from flrdf.inspect import inspect_image

    root = tmp_path / "data"
    make_demo_data(root, num_classes=3, train_per_class=1, test_per_class=2, image_size=80, seed=2)
    cfg = load_config("demo", ["model.weights=null", f"data.root={root}", "data.image_size=64", "data.resize=64",
                               "data.num_workers=0", "model.layer4_stride=1", "model.tau=0.35",
                               "model.loc_layer=layer4", "model.loc_map=mean",  # the paper's map: its grid is layer4's
                               "model.box_refine=none"])
    torch.manual_seed(0)
    save_model_file(tmp_path / "m.safetensors", FLRDF(cfg.model, 3), cfg, ["a", "b", "c"], half=False)
    loaded = load_model(tmp_path / "m.safetensors", "cpu")
    model = loaded.model
    assert model.box_grid((64, 64)).shape == (16, 16)  # 64 / 16 * 4, not 64 / 32 * 4
    loader = eval_loader(cfg.data, "test", 6, 0)
    records = loader.dataset.records
    res = evaluate_localization(model, loader, methods=("gradcam", "eigencam"), records=records, worst_k=0)
    checked = 0
    for row in res.per_image:
        rec = records[row["index"]]
        r = inspect_image(loaded, rec.path, tau=0.35, target=row["label"], cam_methods=["gradcam", "eigencam"],
                          gt_box=list(rec.box))
        for cam in r.cams:
            assert cam.iou == pytest.approx(row[f"iou_{cam.method}"], abs=1e-4)
        assert r.iou == pytest.approx(row["iou_flrdf"], abs=1e-4)
        checked += 1
    assert checked == 6
    # and the boxes themselves, on one batch: cam_boxes on the model grid
    batch = next(iter(eval_loader(cfg.data, "test", 6, 0)))
    maps = compute_cams(model, batch["image"], batch["label"], ["gradcam"])
    boxes = cam_boxes(maps, 0.35, model_box_grid(model, (64, 64)))["gradcam"]
    first = inspect_image(loaded, records[0].path, tau=0.35, target=int(batch["label"][0]), cam_methods=["gradcam"])
    assert np.allclose(first.cams[0].box, boxes[0].tolist(), atol=0.01)

