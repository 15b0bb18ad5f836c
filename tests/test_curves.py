"""dashboard.curves: EMA smoothing, downsampling, series and figures (pure functions)."""

import math

from dashboard import curves


def test_ema_matches_tensorboard_debiased_formula():
    ys = [1.0, 2.0, 3.0, 4.0]
    w = 0.6
    out = curves.ema(ys, w)
    last, expect = 0.0, []
    for i, y in enumerate(ys, 1):
        last = last * w + (1 - w) * y
        expect.append(last / (1 - w ** i))
    assert out == expect
    assert out[0] == 1.0  # debiased: the first point is the value itself
    assert curves.ema(ys, 0.0) == ys


def test_ema_passes_non_finite_values_through():
    out = curves.ema([1.0, float("nan"), 3.0], 0.5)
    assert math.isnan(out[1]) and out[0] == 1.0 and 1.0 < out[2] < 3.0


def test_downsample_keeps_ends_spikes_and_order():
    xs = list(range(10_000))
    ys = [0.0] * 10_000
    ys[5_000] = 99.0
    dx, dy = curves.downsample(xs, ys, 300)
    assert len(dx) <= 300 and dx[0] == 0 and dx[-1] == 9_999
    assert 99.0 in dy and dx == sorted(dx)
    short = curves.downsample([1, 2, 3], [4, 5, 6], 300)
    assert short == ([1, 2, 3], [4, 5, 6])


def _records():
    recs = []
    for s in range(1, 31):
        recs.append({"step": s, "epoch": s / 10, "loss_raw": 3 - s / 20, "loss_object": None if s < 5 else 2.5,
                     "loss_jigsaw": 2.0, "loss_total": 7 - s / 10, "lr": 0.1, "images_per_s": 10.0,
                     "time": 1000 + 6 * s})
        if s % 10 == 0:
            recs.append({"step": s, "epoch": s / 10, "split": "test", "top1": s / 40, "loc_acc": 0.3, "time": 0})
    return recs


def test_series_and_axes():
    recs = _records()
    xs, ys = curves.series(recs, "loss_object")
    assert xs[0] == 5 and len(xs) == 26  # null (inactive branch) values are skipped
    ex, ey = curves.eval_series(recs, "top1", "test", "epoch")
    assert ex == [1.0, 2.0, 3.0] and ey == [0.25, 0.5, 0.75]
    tx = curves.x_values([r for r in recs if "split" not in r], "time")
    assert tx[0] == 0 and abs(tx[-1] - 29 * 6 / 60) < 1e-9


def test_figures_single_and_overlay():
    recs = _records()
    fig = curves.loss_figure({"a": recs}, 0.6)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert labels == ["L_raw", "L_obj", "L_jig", "L_total"]
    assert len(ax.lines) == 8  # each smoothed line has its faded raw twin
    assert any(line.get_alpha() == curves.RAW_ALPHA for line in ax.lines)
    fig2 = curves.loss_figure({"a": recs, "b": recs[:10]}, 0.0, "epoch")
    assert len(fig2.axes) == 4 and all(len(a.lines) == 2 for a in fig2.axes)  # no raw twin at smoothing 0
    aux = curves.aux_figure({"a": recs, "b": recs}, 0.5)
    assert len(aux.axes) == 3 and aux.axes[2].lines
    empty = curves.loss_figure({}, 0.6)
    assert "no data yet" in [t.get_text() for t in empty.axes[0].texts]
