"""The Analyze tab's endpoints through gradio_client, on copies of the shared tiny trained run, and in a browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_browser import CHROMIUM, open_page

from waits import see, wait_until

VIEW = ("progress", "summary", "per_class", "confusion", "zoom", "per_class_img", "pair", "pair_gallery", "rescued",
        "broken", "wsol", "files", "emb_caption", "emb_raw", "emb_object", "points", "calib_caption", "reliability",
        "calibration")


@pytest.fixture(scope="module")
def setup(studio, tiny_run):
    """Two copies of tiny_run under the studio's runs folder: seed 0 (as trained) and a 'seed 1' twin."""
    url, runs_dir, root = studio
    runs_dir.mkdir(parents=True, exist_ok=True)
    a, b = runs_dir / "an-s0", runs_dir / "an-s1"
    for d in (a, b):
        if not d.exists():
            shutil.copytree(tiny_run, d, ignore=shutil.ignore_patterns("eval", "analysis", "job.json"))
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["runtime"]["seed"] = 1
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    st = json.loads((b / "status.json").read_text())
    st["final"]["top1"] = (st["final"]["top1"] or 0) + 0.25
    (b / "status.json").write_text(json.dumps(st))
    return url, runs_dir, root, a, b


@pytest.fixture(scope="module")
def client(setup):
    return Client(setup[0], verbose=False)


@pytest.fixture(scope="module")
def finished(client, setup):
    """One analysis launched through /analyze and polled through /analysis_view until finished."""
    _, runs_dir, root, a, _ = setup
    msg, folder = client.predict(source=str(a), split="test", root=str(root), methods=["gradcam"],
                                 limit=0, faithfulness_limit=2, wsol_step="fast", embedding="tsne",
                                 api_name="/analyze")
    assert "Analyzing in the background" in msg and Path(folder).parent == a / "analysis"
    out = {}

    def ended() -> bool:
        out.update(zip(VIEW, client.predict(folder=folder, api_name="/analysis_view")))
        return "finished" in out["progress"] or "failed" in out["progress"]

    wait_until(ended, 600, "the analysis to end", lambda: out.get("progress", ""), every=1.0)
    assert "finished" in out["progress"], out["progress"]
    return folder, out


def test_endpoints_are_listed(client):
    names = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/analyze", "/analysis_view", "/compare_runs"} <= set(names)


def test_analyze_job_and_its_view(finished):
    folder, out = finished
    assert "Top-1 from the confusion matrices" in out["summary"]
    table = out["per_class"]
    assert len(table["data"]) == 4 and table["headers"][:3] == ["class", "name", "images"]
    assert sum(row[2] for row in table["data"]) == 12
    for key in ("confusion", "zoom", "per_class_img"):
        assert Path(out[key]).is_file(), key
    results = json.loads((Path(folder) / "results.json").read_text())
    if results["pairs"]:
        assert len(out["pair_gallery"]) == len(results["pairs"][0]["images"]) > 0
    counts = results["agreement"]["counts"]
    assert len(out["rescued"]) == min(counts["object_only"], 12)
    assert len(out["broken"]) == min(counts["raw_only"], 12)
    # tiny_run trains the demo config, whose FL map is layer2's DDT map
    assert [r[0] for r in out["wsol"]["data"]] == ["FLRDF (layer2, no suppression, DDT; beyond the paper)",
                                                   "plain map (no suppression)",
                                                   "paper's map X' (layer4 channel mean, after suppression)",
                                                   "X (layer4 channel mean, before suppression)", "Grad-CAM"]
    assert {Path(f).name for f in out["files"]} >= {"predictions.csv", "results.json", "wsol.csv"}
    # the fast threshold step was asked for: the job ran it, the results and the summary say so
    assert results["wsol"]["thresholds"] == {"start": 0.0, "count": 100, "step": 0.01, "name": "fast"}
    assert "100 thresholds (step 0.01, fast)" in out["summary"]
    # the feature maps (t-SNE, as asked) and the calibration table
    assert results["embedding"]["method"] == "tsne" and "silhouette" in out["emb_caption"]
    assert out["emb_raw"] is not None and out["emb_object"] is not None
    assert sorted(r[0] for r in out["points"]["data"]) == list(range(12))
    assert [r[0] for r in out["calibration"]["data"]] == ["raw", "object", "combined"]
    assert Path(out["reliability"]).is_file()
    assert {"embedding_raw.csv", "embedding_object.csv", "calibration.json"} <= {Path(f).name for f in out["files"]}


def test_saved_analysis_is_shown_again_without_recomputation(client, finished):
    folder, _ = finished
    before = {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}
    out = dict(zip(VIEW, client.predict(folder=folder, api_name="/analysis_view")))
    assert "finished" in out["progress"] and Path(out["confusion"]).is_file()
    assert {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("bad", ["/etc", "../x", "an-s0/eval/x", "an-s0"])
def test_analysis_view_refuses_folders_outside_the_rule(client, bad):
    with pytest.raises(AppError, match="analysis folder must be"):
        client.predict(folder=bad, api_name="/analysis_view")


def test_analyze_refuses_bad_input(client, setup, tmp_path):
    with pytest.raises(AppError, match="checkpoint must be"):
        client.predict(source=str(tmp_path / "x.pt"), split="test", root="", methods=[], limit=0,
                       faithfulness_limit=0, api_name="/analyze")
    with pytest.raises(AppError, match="split must be a plain name"):
        client.predict(source=str(setup[3]), split="../x", root="", methods=[], limit=0,
                       faithfulness_limit=0, api_name="/analyze")
    with pytest.raises(AppError, match="not in the list of choices"):   # the Radio refuses it
        client.predict(source=str(setup[3]), split="test", root="", methods=[], limit=0,
                       faithfulness_limit=0, wsol_step="slow", api_name="/analyze")


def test_compare_runs(client, setup):
    diff, metrics, variants, loss, var_plot, csv_file = client.predict(runs=["an-s0", "an-s1"],
                                                                       api_name="/compare_runs")
    assert diff["headers"] == ["key", "an-s0", "an-s1"]
    assert [r[0] for r in diff["data"]] == ["runtime.seed"]
    assert [r[0] for r in metrics["data"]] == ["an-s0", "an-s1"]
    assert len(variants["data"]) == 1 and variants["data"][0][1] == 2     # seeds only: one variant of two runs
    assert "+-" in variants["data"][0][3]                                  # top1 differs by 25 points
    assert loss is not None and var_plot is not None
    text = Path(csv_file).read_text()
    assert text.startswith("kind,run,variant") and text.count("\nrun,") == 2
    with pytest.raises(AppError, match="two or more"):
        client.predict(runs=["an-s0"], api_name="/compare_runs")
    with pytest.raises(AppError, match="run name must be"):
        client.predict(runs=["an-s0", "../etc"], api_name="/compare_runs")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_shows_confusion_plot_and_galleries(setup, finished, tmp_path_factory):
    url = setup[0]
    folder, _ = finished
    for page in open_page(url, 1500, 1100):
        page.get_by_role("tab", name="Analyze").click()
        box = page.locator("#an-saved input").first
        box.fill(folder)
        box.press("Enter")
        img = page.locator("#an-confusion img").first
        see(img, 120, show=("#an-progress", "#an-message"))
        assert page.evaluate("e => e.complete && e.naturalWidth > 0", img.element_handle())
        # the dataframe also keeps hidden copies of its cells: wait for the one on screen
        see(page.locator("#an-wsol").get_by_text("FLRDF (layer2, no suppression, DDT; beyond the paper)").filter(visible=True).first,
            show="#an-wsol")
        results = json.loads((Path(folder) / "results.json").read_text())
        gallery = "#an-pair-gallery" if results["pairs"] else "#an-rescued"
        see(page.locator(f"{gallery} img").first, 60, show=gallery)
        # the two feature maps are drawn (Vega canvases/SVGs) and the reliability diagram is shown
        for plot in ("#an-emb-raw", "#an-emb-object"):
            see(page.locator(f"{plot} canvas, {plot} svg").first, 60, show=plot)
        page.locator("#an-reliability").scroll_into_view_if_needed()   # its img loads lazily, once on screen
        rel = page.locator("#an-reliability img").first
        see(rel, 60, show="#an-calib-caption")
        assert page.evaluate("e => e.complete && e.naturalWidth > 0 && e.getBoundingClientRect().height > 100",
                             rel.element_handle())
        page.screenshot(path=str(tmp_path_factory.getbasetemp() / "analyze_tab.png"), full_page=True)
        # a row of the point table opens its image in Inspect, as a click in the Data tab does
        from dashboard.analyze_view import points_table

        name = points_table(Path(folder), results)[0][1]
        page.locator("#an-points").scroll_into_view_if_needed()
        page.locator("#an-points").get_by_text(name, exact=True).filter(visible=True).first.click()
        see(page.locator("#an-sent", has_text="Sent"), 60, show="#an-sent")
        assert name in page.locator("#an-sent").inner_text()
        see(page.locator("#inspect-image img").first, 60, show="#inspect-status")
