"""Issue 14 without a browser: the first-run preparation (demo data, the bundled model's backbone, which data a
model implies), the dataset browser's data side, and its endpoint's refusal of paths outside the allowed roots."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dashboard import browse, firstrun
from dashboard.paths import PathError, Roots

SMALL = {"classes": 3, "train_per_class": 2, "test_per_class": 2, "seed": 0}


def test_demo_data_is_made_once_with_progress_and_matches_its_recipe(tmp_path):
    seen = []
    out = tmp_path / "data" / "demo"
    assert firstrun.ensure_demo_data(out, 2, SMALL, progress=lambda n, t, what: seen.append((n, t)))
    assert firstrun.matches(out, 2, SMALL) and not firstrun.matches(out, 1, SMALL)
    assert seen and seen[0] == (0, 12) and all(t == 12 for _, t in seen)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no partial folder left
    assert not firstrun.ensure_demo_data(out, 2, SMALL)  # already there: nothing written
    info, problems = browse.dataset_info("demo", out)
    assert info["splits"]["train"]["images"] == 6 and info["splits"]["test"]["images"] == 6 and not problems


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(firstrun.FirstRunError, match="not the synthetic demo set"):
        firstrun.ensure_demo_data(out, 2, SMALL)
    assert (out / "mine.txt").read_text() == "keep me"


def test_the_data_version_a_model_implies():
    from flrdf.data.synthetic import class_specs
    from flrdf.data.synthetic_v2 import class_specs_v2

    v1 = [s.name.replace("_", " ") for s in class_specs(10)]   # as the cub reader names them
    v2 = [s.name for s in class_specs_v2(10)]
    assert firstrun.model_data_version(v1)[0] == 1
    assert firstrun.model_data_version(v2)[0] == 2
    assert firstrun.model_data_version(["a", "b"]) == (2, "not recognised; assuming v2")


def test_demo_root_for_keeps_versions_apart(tmp_path):
    assert firstrun.demo_root_for(tmp_path, 2, SMALL) == tmp_path / "demo"       # nothing yet: the config's root
    assert firstrun.demo_root_for(tmp_path, 1, SMALL) == tmp_path / "demo-v1"
    firstrun.ensure_demo_data(tmp_path / "demo", 2, SMALL)
    assert firstrun.demo_root_for(tmp_path, 1, SMALL) == tmp_path / "demo-v1"   # data/demo holds v2: not reused


def test_the_bundled_models_backbone_loads_as_weights(tmp_path, tiny_model_file):
    import torch

    from flrdf.backbone import ResNetBackbone
    from flrdf.engine.checkpoint import load_model

    target = tmp_path / "bb.pth"
    assert firstrun.ensure_backbone(target, tiny_model_file)
    assert not firstrun.ensure_backbone(target, tiny_model_file)  # up to date: not rewritten
    assert firstrun.model_backbone_name(tiny_model_file) == "resnet18"
    net = ResNetBackbone("resnet18", weights=str(target))
    want = load_model(tiny_model_file).model.backbone.state_dict()
    got = net.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_form_starts_from_the_bundled_backbone_when_the_stand_in_is_missing(tmp_path):
    from dashboard import train_form as form

    values = form.defaults("demo")
    values["model.weights"] = "data/definitely-missing-backbone.pth"
    values["data.root"] = str(tmp_path / "nothing-here")
    base = form.resolve("demo", values)
    # the shipped default missing -> null; here a non-default missing file is kept and warned about
    assert any("does not exist here" in n for n in base.notes)
    values = form.defaults("demo")
    values["data.root"] = str(tmp_path / "nothing-here")
    if Path(values["model.weights"]).exists():
        pytest.skip("data/demo-backbone.pth exists in this checkout: the fallback is not needed")
    res = form.resolve("demo", values, fallback_weights=str(tmp_path / "bb.pth"), creates_data=True)
    assert f"model.weights={tmp_path / 'bb.pth'}" in res.overrides
    assert any("bundled demo model's own backbone" in n for n in res.notes)
    assert any("Launch first creates the synthetic demo set" in n for n in res.notes)
    plain = form.resolve("demo", values)
    assert "model.weights=null" in plain.overrides


def test_dataset_info_reports_missing_files_and_boxes(tmp_path, demo_root):
    root = shutil.copytree(demo_root, tmp_path / "copy")
    data = browse.load_split("demo", root, "test")
    victim = Path(data.records[0].path)
    victim.unlink()
    lines = (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(lines[1:]) + "\n")
    info, problems = browse.dataset_info("demo", root)
    text = " ".join(problems)
    assert "missing" in text and victim.name in text
    assert "without a box" in text


def test_select_pages_by_class_and_wrong_predictions(demo_root):
    data = browse.load_split("demo", Path(demo_root).absolute(), "test")
    recs = data.records
    preds = [browse.Prediction(r.label if i % 2 else (r.label + 1) % data.num_classes, 0.5, (0, 0, 1, 1))
             for i, r in enumerate(recs)]
    assert browse.select(recs) == list(range(len(recs)))
    assert all(recs[i].label == 1 for i in browse.select(recs, 1))
    wrong = browse.select(recs, None, True, preds)
    assert wrong == [i for i in range(len(recs)) if i % 2 == 0]
    pic = browse.thumbnail(recs[0], pred=preds[0], class_names=data.class_names)
    assert max(pic.shape[:2]) == browse.THUMB_SIDE
    assert "✗" in browse.caption(recs[0], preds[0], data.class_names)


def test_predictions_over_a_split(tiny_loaded, demo_root):
    data = browse.load_split("demo", Path(demo_root).absolute(), "test")
    preds = browse.predict_split(tiny_loaded, data, ("tiny",), ("demo", "test"), batch_size=5)
    assert len(preds) == len(data.records)
    assert all(0 <= p.label < len(tiny_loaded.class_names) and 0 < p.prob <= 1 for p in preds)
    assert browse.cached_predictions(("tiny",), ("demo", "test")) is preds


@pytest.mark.parametrize("bad", ["/etc", "/", "..", "../..", "data/../../etc", "~", "/tmp"])
def test_dataset_roots_outside_the_allowed_folders_are_refused(tmp_path, bad):
    (tmp_path / "data" / "demo").mkdir(parents=True)
    roots = Roots(tmp_path / "runs", [], None, tmp_path / "data")
    with pytest.raises(PathError, match="dataset root must be a folder under data/"):
        roots.dataset_root(bad)
    assert roots.dataset_root("data/demo") == (tmp_path / "data" / "demo").resolve()
    assert roots.dataset_root(str(tmp_path / "data" / "demo")) == (tmp_path / "data" / "demo").resolve()


def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "elsewhere")
    roots = Roots(tmp_path / "runs", [], None, tmp_path / "data")
    with pytest.raises(PathError):
        roots.dataset_root("data/link")


def test_browse_endpoint_refuses_outside_roots(dashboard_url, demo_root, tmp_path_factory):
    from gradio_client import Client

    client = Client(dashboard_url, verbose=False)
    for bad in ("/etc", "/", str(Path.home()), "../../..", str(demo_root)):  # demo_root: a tmp folder, not allowed
        with pytest.raises(Exception) as info:
            client.predict("demo", bad, "test", "(all classes)", 1, "", False, api_name="/browse")
        assert "dataset root must be a folder under data/" in str(info.value), bad
    with pytest.raises(Exception) as info:
        client.predict("demo", "data/demo", "../test", "(all classes)", 1, "", False, api_name="/browse")
    assert "split must be a plain name" in str(info.value)


def test_inspect_does_not_recompute_unchanged_inputs(dashboard_url, examples_dir, tiny_model_file, monkeypatch):
    from gradio_client import Client, handle_file

    import dashboard.inspect_tab as tab

    calls = []
    real = tab.inspect_image
    monkeypatch.setattr(tab, "inspect_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    client = Client(dashboard_url, verbose=False)
    args = dict(image=handle_file(str(examples_dir / "example_1.jpg")), checkpoint=str(tiny_model_file), tau=0.45,
                n=2, target="predicted", cam_methods=["gradcam"], seed=3, api_name="/inspect")
    first = client.predict(**args)
    second = client.predict(**args)
    assert len(calls) == 1 and first[0] == second[0]           # same status text, computed once
    client.predict(**{**args, "seed": 4})                      # a changed input is computed
    assert len(calls) == 2
