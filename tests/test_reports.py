"""Reports render from a store: files exist, plots are non-empty images, tables hold the stored values."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from experiments_util import dedent
from xbarlab.experiments import Store, parse_spec, resolve_trials
from xbarlab.reports import render_report
from xbarlab.reports.aggregate import pareto_front
from xbarlab.stats import summarize

SIGMA_SWEEP = dedent(
    """
    name: noise
    description: synthetic read-noise sweep
    base:
      model: {checkpoint: /nonexistent/ckpt}
      data: {dataset: digits}
      hardware: {preset: fefet}
      metrics: {pc2_layer: features.3}
    grid:
      hardware.read_noise.sigma: [0.05, 0.1, 0.2]
      mitigation: [none, bn_adapt]
    chips: 3
    """
)
PRESET_SWEEP = dedent(
    """
    name: presets
    base:
      model: {checkpoint: /nonexistent/ckpt}
      data: {dataset: digits}
      hardware: {preset: rram}
    grid:
      hardware.preset: [rram, fefet, pcm-i]
      mitigation: [none, bn_finetune]
    chips: 2
    """
)
DRIFT_SWEEP = dedent(
    """
    name: drift
    base:
      model: {checkpoint: /nonexistent/ckpt}
      data: {dataset: digits}
      hardware: {preset: fefet, adc: {bits: 8}}
    grid:
      drift_s: [1, 1e3, 1e6]
      hardware.adc.bits: [4, 8]
    chips: 2
    report: {pareto: {x: adc_power_rel, y: accuracy, by: drift_s}}
    """
)


def _fill(db: Store, text: str, value) -> dict[str, float]:  # type: ignore[no-untyped-def]
    spec = parse_spec(text)
    trials = resolve_trials(spec, fingerprint=False)
    db.register_sweep(spec, trials)
    stored = {}
    for t in trials:
        metrics = value(t)
        db.add_result(
            t.hash,
            {
                "metrics": metrics,
                "timings": {"total_s": 2.0},
                "env": {"host": "test-host"},
                "finished_at": "t",
                "error": None,
            },
        )
        stored[t.hash] = metrics["accuracy"]
    return stored


def _sigma_metrics(t):  # type: ignore[no-untyped-def]
    s = t.params["hardware.read_noise.sigma"]
    acc = 95.0 - 100 * s * (0.3 if t.params["mitigation"] == "bn_adapt" else 1.0) - 0.7 * t.chip
    return {"accuracy": acc, "pc2": s * s / 4 * (1 + 0.05 * t.chip), "clean_accuracy": 96.5}


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert float(np.std(img[..., :3])) > 0.05  # not a blank canvas


def test_report_from_store(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as db:
        sigma_acc = _fill(db, SIGMA_SWEEP, _sigma_metrics)
        _fill(
            db,
            PRESET_SWEEP,
            lambda t: {
                "accuracy": {"rram": 80.0, "fefet": 85.0, "pcm-i": 70.0}[t.params["hardware.preset"]]
                + (5 if t.params["mitigation"] == "bn_finetune" else 0)
                + t.chip
            },
        )
        _fill(
            db,
            DRIFT_SWEEP,
            lambda t: {
                "accuracy": 90.0
                - 2 * np.log10(t.params["drift_s"])
                - (8 if t.params["hardware.adc.bits"] == 4 else 0)
                + t.chip,
                "adc_power_rel": 2.0 ** (t.params["hardware.adc.bits"] - 8),
            },
        )
    report = render_report(path, tmp_path / "report", title="Synthetic report")
    assert report.sweeps == ("noise", "presets", "drift")
    for f in (report.markdown, report.html, report.csv):
        assert f.is_file() and f.stat().st_size > 500
    names = sorted(p.name for p in report.plots)
    assert names == [
        "drift-accuracy.png",
        "drift-pareto.png",
        "noise-accuracy.png",
        "noise-pc2.png",
        "presets-accuracy.png",
    ]
    for p in report.plots:
        _png_ok(p)
    md = report.markdown.read_text()
    html = report.html.read_text()
    assert "# Synthetic report" in md and "<h1>Synthetic report</h1>" in html
    # every stored accuracy appears in the per-trial tables of both documents
    for acc in sigma_acc.values():
        assert f"| {acc:.2f} |" in md
        assert f"<td>{acc:.2f}</td>" in html
    # aggregated means and Student-t CIs over the three chips
    accs = [95.0 - 100 * 0.2 - 0.7 * c for c in range(3)]
    s = summarize(accs)
    assert f"| 0.2 | none | 3 | {s.mean:.2f} | {s.std:.2f} | [{s.ci95_low:.2f}, {s.ci95_high:.2f}] |" in md
    assert f"{0.2 * 0.2 / 4 * 1.05:.3e}" in md  # pc2 of the σ = 0.2 trial of chip 1
    assert "digital (clean) accuracy: 96.50 %" in md
    # HTML is self-contained: every figure embedded, nothing external
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(report.plots)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "](plots/noise-accuracy.png)" in md
    assert "test-host" in md and "total_s" in md
    csv = report.csv.read_text().splitlines()
    assert len(csv) == 1 + 18 + 12 + 12


def test_render_from_rows_and_single_sweep(tmp_path: Path) -> None:
    rows = [
        {"params": {"preset": p}, "mitigation": m, "chip": c, "metrics": {"accuracy": a + c}}
        for p, a in (("rram", 80.0), ("fefet", 70.0))
        for m in ("none", "bn_adapt")
        for c in range(3)
    ]
    report = render_report(rows, tmp_path / "rows", title="Rows", notes=["Some **notes**.", "- a\n- b"])
    assert [p.name for p in report.plots] == ["results-accuracy.png"]
    _png_ok(report.plots[0])
    html = report.html.read_text()
    assert "<strong>notes</strong>" in html and "<li>a</li>" in html
    assert "| rram | bn_adapt | 3 | 81.00 |" in report.markdown.read_text()
    path = tmp_path / "r.sqlite"
    with Store(path) as db:
        _fill(db, SIGMA_SWEEP, _sigma_metrics)
        _fill(db, PRESET_SWEEP, lambda t: {"accuracy": 50.0})
        one = render_report(db, tmp_path / "one", sweep="presets")
        assert one.sweeps == ("presets",)
        with pytest.raises(ValueError, match="allowed: a sweep of the store"):
            render_report(db, tmp_path / "none", sweep="nope")


def test_report_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xbarlab.cli import app

    path = tmp_path / "r.sqlite"
    with Store(path) as db:
        _fill(db, SIGMA_SWEEP, _sigma_metrics)
    res = CliRunner().invoke(app, ["report", str(path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "report.html").is_file() and "report.html" in res.stdout


def test_pareto_front() -> None:
    pts = [(1.0, 50.0), (0.5, 40.0), (0.25, 45.0), (1.0, 60.0), (0.0625, 10.0), (0.5, 61.0)]
    assert pareto_front(pts) == [4, 2, 5]


def test_partial_sweep_is_flagged_and_single_chip_spread_is_undefined(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with Store(path) as db:
        spec = parse_spec(SIGMA_SWEEP)
        trials = resolve_trials(spec, fingerprint=False)
        db.register_sweep(spec, trials)
        first = trials[0]  # one chip of the first grid point only
        db.add_result(
            first.hash,
            {
                "metrics": _sigma_metrics(first),
                "timings": {"total_s": 1.0},
                "env": {},
                "finished_at": "t",
                "error": None,
            },
        )
    text = render_report(path, tmp_path / "report").markdown.read_text()
    assert f"**Incomplete sweep**: 1 of {len(trials)} planned trials have results" in text
    assert "fixed so far: `hardware.read_noise.sigma`" in text
    assert "| 1 | " in text and "| – | – |" in text
