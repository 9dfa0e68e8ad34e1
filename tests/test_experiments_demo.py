"""``xbarlab demo`` end to end on its tiny (--quick) setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from xbarlab.demo import MITIGATIONS, PRESETS, run_demo
from xbarlab.experiments import Store


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_quick(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", quick=True, executor="local", progress=False)
    assert result.settings.chips == 2 and result.settings.test_samples == 100
    md = result.markdown.read_text()
    html = result.html.read_text()
    assert "xbarlab demo" in md and "## Demo settings" in md and "<h2>Demo settings</h2>" in html
    plot = tmp_path / "demo" / "plots" / "demo-accuracy.png"
    assert plot.is_file() and plot.stat().st_size > 5000
    assert 'src="data:image/png;base64,' in html
    with Store(result.store, readonly=True) as db:
        rows = db.rows("demo")
    assert len(rows) == len(PRESETS) * len(MITIGATIONS) * 2
    assert {r.params["hardware.preset"] for r in rows} == set(PRESETS)
    assert {r.mitigation for r in rows} == set(MITIGATIONS)
    for r in rows:
        assert 0.0 <= r.metrics["accuracy"] <= 100.0 and r.metrics["test_samples"] == 100
        assert r.metrics["clean_accuracy"] > 30.0
        if r.mitigation == "bn_finetune":
            assert r.metrics["finetune_samples"] == 128
        # every stored accuracy appears in the report's per-trial table
        assert f"| {r.metrics['accuracy']:.2f} |" in md
    if "checkpoint" in str(result.model) or "fallback" in result.model:
        assert "Fallback model" in md
    # a second run reuses every stored result
    again = run_demo(tmp_path / "demo", quick=True, executor="local", progress=False)
    assert f"0 chip evaluation(s) now, {len(rows)} reused" in again.markdown.read_text()
