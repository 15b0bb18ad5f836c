import gc
import warnings

import numpy as np
import pytest
import torch

from flrdf import cams
from flrdf.cams import METHODS, RawBranch, box_grid, cam_boxes, compute_cams, standalone_cam
from flrdf.config import ModelConfig
from flrdf.model import FLRDF

SHARED = [k for k, m in METHODS.items() if m.shared]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2), 5).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 96)


def _no_hooks(model):
    layer = model.backbone.layer4
    return not layer._forward_hooks and not layer._backward_hooks


def test_raw_branch_is_the_raw_classifier_written_out(model, images):
    """RawBranch = backbone -> DRS (min(X, X_max * sigmoid(W GAP(X)))) -> GAP -> heads['raw'], computed here
    from the layers' weights without raw_features / pool, and it is what the model's raw logits are."""
    bb = model.backbone
    with torch.no_grad():
        x = bb.layer4(bb.layer3(bb.layer2(bb.layer1(bb.stem(images)))))
        fc = model.suppression.controller.fc
        gate = torch.sigmoid(x.mean(dim=(2, 3)) @ fc.weight.T + (0.0 if fc.bias is None else fc.bias))
        xs = torch.minimum(x, x.amax(dim=(2, 3), keepdim=True) * gate[:, :, None, None])
        head = model.heads["raw"]
        expected = xs.mean(dim=(2, 3)) @ head.weight.T + head.bias
        unsuppressed = x.mean(dim=(2, 3)) @ head.weight.T + head.bias
        wrapper = RawBranch(model)
        got = wrapper(images)
    assert wrapper.target_layer is model.backbone.layer4
    assert got.shape == (2, 5)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, unsuppressed, atol=1e-3)  # the suppression is in the path
    with torch.no_grad():
        assert torch.allclose(model(images).logits_raw, expected, atol=1e-5)


def test_shared_pass_equals_each_standalone_method(model, images):
    targets = [1, 3]
    shared = compute_cams(model, images, targets, SHARED)
    for key in SHARED:
        alone = standalone_cam(model, images, targets, key)
        assert shared[key].shape == (2, 64, 96) and shared[key].dtype == np.float32
        np.testing.assert_array_equal(shared[key], alone, err_msg=key)
        assert 0.0 <= shared[key].min() and shared[key].max() <= 1.0
    assert _no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_scorecam_reuses_activations_and_equals_standalone(model):
    x = torch.randn(1, 3, 32, 32)  # Score-CAM runs one forward per channel (512): keep them tiny
    shared = compute_cams(model, x, [2], ["scorecam"])["scorecam"]
    np.testing.assert_array_equal(shared, standalone_cam(model, x, [2], "scorecam"))
    assert _no_hooks(model)


def test_one_hooked_pass_whatever_the_number_of_methods(model, images, monkeypatch):
    calls = []
    real = cams.hooked_pass
    monkeypatch.setattr(cams, "hooked_pass", lambda *a: calls.append(1) or real(*a))
    forwards = []
    handle = model.backbone.register_forward_hook(lambda *a: forwards.append(1))
    try:
        compute_cams(model, images, [0, 1], ["gradcam"])
        one = (len(calls), len(forwards))
        compute_cams(model, images, [0, 1], SHARED)
        assert (len(calls) - one[0], len(forwards) - one[1]) == one == (1, 1)
    finally:
        handle.remove()


def test_targets_change_gradient_maps(model, images):
    a = compute_cams(model, images, [0, 0], ["gradcam", "eigencam"])
    b = compute_cams(model, images, [4, 4], ["gradcam", "eigencam"])
    assert not np.array_equal(a["gradcam"], b["gradcam"])
    np.testing.assert_array_equal(a["eigencam"], b["eigencam"])  # class-agnostic


def test_hooks_released_after_an_error(model, images):
    with pytest.raises(IndexError):
        compute_cams(model, images, [0, 99], ["gradcam"])  # class 99 does not exist
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="one target class per image"):
        compute_cams(model, images, [0], ["gradcam"])
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(model, images, [0, 1], ["nonsense"])


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)


def test_no_memory_growth_over_repeated_calls(model, images):
    methods = ["gradcam", "layercam", "eigencam"]
    compute_cams(model, images, [0, 1], methods)
    before = _live_tensors()
    for _ in range(3):
        compute_cams(model, images, [0, 1], methods)
    after = _live_tensors()
    assert after <= before
    assert _no_hooks(model)


def test_cam_boxes_follow_the_flrdf_rule():
    from flrdf.boxes import BoxGrid

    m = np.zeros((2, 64, 64), np.float32)
    m[0, 10:30, 20:50] = 1.0
    m[1, 40:60, 0:16] = 0.8
    m[1, 0:4, 60:64] = 0.5  # smaller second region: not the largest
    pixels = BoxGrid((64, 64), 1.0, 0.5, (64, 64))  # one cell per pixel, centred on it
    boxes = cam_boxes({"a": m, "b": m[::-1].copy()}, tau=0.5, grid=pixels)
    assert boxes["a"].tolist() == [[20, 10, 50, 30], [0, 40, 16, 60]]
    assert boxes["b"].tolist() == [[0, 40, 16, 60], [20, 10, 50, 30]]
    # a coarse grid: area-resampled to 16 x 16 cells of 4 px, centres shifted 1 px left/up of the tiles
    coarse = cam_boxes({"a": m}, tau=0.5, grid=BoxGrid((16, 16), 4.0, 1.0, (64, 64)))["a"]
    assert coarse.shape == (2, 4) and torch.allclose(coarse[0], torch.tensor([19.0, 7, 51, 31]))
    # the model's grid: stride 32 by default, 16 with layer4_stride=1; x map_upsample (4)
    grid = box_grid(FLRDF(ModelConfig(backbone="resnet18", pretrained=False), 2), (64, 96))
    assert grid.shape == (8, 12) and grid.pitch == 8 and grid.image_hw == (64, 96)
    fine = box_grid(FLRDF(ModelConfig(backbone="resnet18", pretrained=False, layer4_stride=1), 2), (64, 96))
    assert fine.shape == (16, 24) and fine.pitch == 4
    flat = cam_boxes({"a": np.zeros((1, 8, 8), np.float32)}, tau=0.5, grid=BoxGrid((8, 8), 1.0, 0.5, (8, 8)))["a"]
    assert flat.tolist() == [[0, 0, 8, 8]]  # a constant map: the whole image
    with pytest.raises(TypeError, match="BoxGrid"):
        cam_boxes({"a": m}, tau=0.5, grid=(16, 16))


def test_at_grid_is_the_layer4_cam_before_upsampling(model):
    """``at_grid=True``: Grad-CAM at layer4's resolution, written out here from its definition - ReLU of the
    channel sum of the activations weighted by their spatially averaged gradients, min-max per image; and it
    is what grad-cam itself upsamples (bilinear, then min-max) to the input-size CAM."""
    import cv2

    torch.manual_seed(1)
    images = torch.randn(2, 3, 128, 160)         # a 4 x 5 layer4 grid whose CAMs for these classes are not all 0
    targets = [4, 3]
    grid = compute_cams(model, images, targets, ["gradcam", "eigencam"], at_grid=True)
    acts = []
    hook = model.backbone.layer4.register_forward_hook(lambda _m, _i, out: acts.append(out))
    try:
        logits = RawBranch(model)(images)
    finally:
        hook.remove()
    grads = torch.autograd.grad(logits[0, 4] + logits[1, 3], acts[0])[0]
    a = acts[0].detach()
    raw = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    flat = raw.flatten(1)
    want = ((flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)))
    h, w = a.shape[-2:]
    assert grid["gradcam"].shape == (2, h, w) == grid["eigencam"].shape and (h, w) == (4, 5)
    np.testing.assert_allclose(grid["gradcam"], want.view(2, h, w).numpy(), atol=1e-5)
    model.zero_grad(set_to_none=True)
    full = compute_cams(model, images, targets, ["gradcam"])["gradcam"]
    for g, f in zip(grid["gradcam"], full):
        up = cv2.resize(g, (160, 128), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose((up - up.min()) / (up.max() - up.min()), f, atol=1e-5)
