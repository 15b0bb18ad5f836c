"""The dashboard served in-process, driven through gradio_client like any API user."""

import threading
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from dashboard.context import DashboardContext
from dashboard.inspect_tab import OUTPUTS
from flrdf.cams import DEFAULT_METHODS
from waits import wait_s


@pytest.fixture(scope="module")
def client(dashboard_url):
    return Client(dashboard_url, verbose=False)


def inspect(client, image, checkpoint=None, methods=DEFAULT_METHODS, **kw):
    args = dict(image=handle_file(str(image)), tau=0.5, n=4, target="predicted", cam_methods=list(methods), seed=0)
    if checkpoint is not None:
        args["checkpoint"] = str(checkpoint)
    args.update(kw)
    return dict(zip(OUTPUTS, client.predict(**args, api_name="/inspect")))


def assert_full_result(out, methods=DEFAULT_METHODS):
    assert out["status"].startswith("**Prediction:**")
    assert Path(out["boxes"]["image"]).is_file() and out["boxes"]["annotations"][0]["label"] == "FLRDF box"
    for key in ("before", "after", "removed", "crop", "jigsaw"):
        assert Path(out[key]).is_file(), key
    assert Path(out["loc"]["value"]).is_file()
    assert out["loc"]["label"] == "box source: the paper's map X' (layer4, after suppression)"  # a paper config
    assert "controller" in out["supp_note"]
    assert len(out["gate_plot"]["value"]["data"]) == 512 and len(out["channels"]) == 6  # resnet18: 512 channels
    assert out["top5"]["headers"] == ["rank", "combined", "raw", "object", "jigsaw"]
    # the paper's X' (here also the box source), then the CAMs
    assert len(out["gallery"]) == 1 + len(methods) and out["gallery"][0]["caption"].startswith("paper's map X'")
    assert [row[0] for row in out["timing"]["data"]][-1] == "total"
    assert len(out["label"]["confidences"]) == 4


def test_api_is_listed(client):
    assert "/inspect" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def test_an_empty_request_gets_one_message_and_no_error(client):
    out = dict(zip(OUTPUTS, client.predict(image=None, tau=0.5, n=4, target="predicted", cam_methods=["gradcam"],
                                           seed=0, api_name="/inspect")))
    assert out["status"].startswith("**No image yet:**")


def test_whatif_on_the_api(client, examples_dir):
    own = inspect(client, examples_dir / "example_1.jpg", methods=[])
    assert own["whatif_map"] is None and own["whatif_note"].startswith("**What-if** (no retraining)")
    off = inspect(client, examples_dir / "example_1.jpg", methods=[], whatif="off")
    assert off["whatif_note"].startswith("**What-if: suppression off") and Path(off["whatif_map"]).is_file()
    assert off["whatif_table"]["headers"] == ["rank", "raw (model)", "raw (what-if)", "combined (model)",
                                              "combined (what-if)"]
    half = inspect(client, examples_dir / "example_1.jpg", methods=[], whatif="scale", whatif_scale=0.5)
    assert "G x 0.5" in half["whatif_note"]
    with pytest.raises(AppError, match="what-if"):
        inspect(client, examples_dir / "example_1.jpg", methods=[], whatif="constant", whatif_delta=3)


def test_example_with_ground_truth(client, examples_dir):
    out = inspect(client, examples_dir / "example_1.jpg")
    assert_full_result(out)
    assert "IoU with ground truth" in out["status"]
    assert [a["label"] for a in out["boxes"]["annotations"]] == ["FLRDF box", "ground truth"]
    ious = [row[3] for row in out["cam_table"]["data"]]
    assert all(0 <= v <= 1 for v in ious)
    assert all("IoU" in item["caption"] for item in out["gallery"])


@pytest.mark.parametrize("kind", ["one_pixel", "rgba", "16bit", "cmyk"])
def test_unusual_images_are_inspected(client, odd_images, kind):
    out = inspect(client, odd_images[kind], methods=["gradcam"])
    assert_full_result(out, ["gradcam"])
    assert "IoU" not in out["status"]  # not an example: no ground truth


@pytest.mark.parametrize("kind, message", [("not_image", "not a readable image"), ("truncated", "cannot decode"),
                                           ("huge", "decompression bomb")])
def test_bad_images_give_readable_errors_and_the_app_keeps_serving(client, bad_inputs, examples_dir, kind, message):
    with pytest.raises(AppError, match=message) as info:
        inspect(client, bad_inputs[kind])
    assert "/tmp/gradio" not in str(info.value)  # the server's upload path is not leaked
    assert_full_result(inspect(client, examples_dir / "example_0.jpg", methods=["gradcam", "eigencam"]),
                       ["gradcam", "eigencam"])


@pytest.mark.parametrize("which, message", [("wrong", "not an FLRDF checkpoint"), ("missing", "not found"),
                                            ("outside", "checkpoint must be the demo model")])
def test_wrong_checkpoints_give_readable_errors(client, wrong_checkpoint, examples_dir, tmp_path, which, message):
    # wrong_checkpoint's folder is an --allow-dir of the app; tmp_path is not (see test_security.py)
    path = {"wrong": wrong_checkpoint, "missing": wrong_checkpoint.parent / "nothing.pt",
            "outside": tmp_path / "nothing.pt"}[which]
    with pytest.raises(AppError, match=message) as info:
        inspect(client, examples_dir / "example_0.jpg", checkpoint=path)
    assert str(path.parent) not in str(info.value)  # the file is named, not its folder on the server
    assert_full_result(inspect(client, examples_dir / "example_0.jpg", methods=["gradcam"]), ["gradcam"])


def test_bad_settings_give_readable_errors(client, examples_dir):
    with pytest.raises(AppError, match="does not tile"):
        inspect(client, examples_dir / "example_0.jpg", n=3)
    with pytest.raises(AppError, match="out of range"):
        inspect(client, examples_dir / "example_0.jpg", target="9")


def test_target_class_by_index(client, examples_dir):
    from flrdf.data.synthetic import class_specs

    out = inspect(client, examples_dir / "example_0.jpg", target="2", methods=["gradcam"])
    assert f"CAM target: {class_specs(4)[2].name}" in out["status"]


def test_two_concurrent_requests_both_succeed(dashboard_url, examples_dir):
    results, errors = [], []

    def worker(i):
        try:
            c = Client(dashboard_url, verbose=False)
            results.append(inspect(c, examples_dir / f"example_{i}.jpg"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=wait_s(120))
    assert not any(t.is_alive() for t in threads), "a request is still waiting for its answer"
    assert not errors and len(results) == 2, errors
    for out in results:
        assert_full_result(out)


def test_model_cache_reloads_a_rewritten_file(tiny_model_file, tmp_path):
    import shutil

    path = tmp_path / "m.safetensors"
    shutil.copy(tiny_model_file, path)
    ctx = DashboardContext.create(path, tmp_path / "runs", "cpu", tmp_path / "no-examples")
    first = ctx.load()
    assert ctx.load(str(path)) is first and len(ctx.models) == 1
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ctx.load() is not first and len(ctx.models) == 1
