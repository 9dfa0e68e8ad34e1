"""The P3 results table (``results.md``, with the quantisation search's Pareto front) and figures (``sweep.png``,
``quant_pareto.png``), built from the stored stage results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xbarlab.papers.p3.config import P3Config

__all__ = ["write_figures", "write_table"]


def _fmt(mc: dict[str, Any] | None) -> str:
    if mc is None:
        return "—"
    half = (mc["ci95_high"] - mc["ci95_low"]) / 2
    return f"{mc['mean']:.2f} ± {half:.2f}"


def _settings_of(results: dict[str, Any], name: str) -> dict[str, Any]:
    """The stored settings of a stage result (empty when the stage did not run or has no record)."""
    return dict(((results.get(name) or {}).get("_stage") or {}).get("settings") or {})


def _labels(cfg: P3Config, results: dict[str, Any]) -> dict[str, Any]:
    """Model, data set, σ_max, chips and test images of the table, from the stored stage settings (``cfg``
    only for a stage result without a record)."""
    models = _settings_of(results, "models")
    main = next((st for st in (_settings_of(results, n) for n in ("placement", "quant", "perchip")) if st), {})
    sweep = results.get("sweep") or {}
    sweep_sigmas = [float(k) for k in (sweep.get("plain") or {})]
    if main:
        sigma_max = float(main["sigma"])
    elif sweep_sigmas:
        sigma_max = max(sweep_sigmas)
    else:
        sigma_max = cfg.sigma_max
    return {
        "model": models.get("model", cfg.model),
        "dataset": models.get("dataset", cfg.dataset),
        "sigma_max": sigma_max,
        "chips": main.get("chips"),
        "test_images": main.get("test_images"),
        "sweep_images": sweep.get("images"),
        "sweep_chips": sweep.get("chips"),
        "sweep_sigmas": sorted(sweep_sigmas),
    }


def write_table(cfg: P3Config, out: Path, results: dict[str, Any]) -> str:
    """The results table (Markdown) from the stage results; also written to ``results.md``.

    Every label (model, σ_max, chips, image counts) comes from the stored settings of the stage results shown."""
    models = results.get("models", {})
    sweep = results.get("sweep") or {}
    placement = results.get("placement")
    quant = results.get("quant")
    clean = models.get("plain", {}).get("clean_accuracy")
    labels = _labels(cfg, results)
    smax = f"{labels['sigma_max']:g}"

    def pct(mc: dict[str, Any] | None) -> str:
        if mc is None or clean is None:
            return "—"
        return f"{100.0 * mc['mean'] / clean:.1f} %"

    protocol = []
    if labels["chips"] is not None:
        protocol.append(f"over {labels['chips']} chips, {labels['test_images']} test images")
    if labels["sweep_images"] is not None:
        protocol.append(f"sweep rows: {labels['sweep_chips']} chips, {labels['sweep_images']} images")
    lines = [
        f"P3 pipeline: `{labels['model']}` on {labels['dataset']}, log-normal σ_max = {smax}; accuracy in % "
        f"(mean ± 95 % CI{' ' if protocol else ''}{'; '.join(protocol)}).",
        "",
        "| stage | accuracy | % of original | compensation overhead (params / MACs) | ADC energy / inference |",
        "|---|---:|---:|---:|---:|",
    ]
    if clean is not None:
        lines.append(f"| clean (digital, plain) | {clean:.2f} | 100.0 % | — | — |")
    lip_clean = models.get("lipschitz", {}).get("clean_accuracy")
    if lip_clean is not None:
        lines.append(f"| clean (digital, Lipschitz) | {lip_clean:.2f} | {100 * lip_clean / clean:.1f} % | — | — |")
    for name, label in (("plain", "unprotected"), ("lipschitz", "Lipschitz")):
        mc = sweep.get(name, {}).get(f"{0.0:g}")
        if mc is not None:
            lines.append(f"| {label}, σ = 0 (quantised, ADC) † | {_fmt(mc)} | {pct(mc)} | — | — |")
        mc = sweep.get(name, {}).get(smax)
        if mc is not None:
            lines.append(f"| {label}, σ = {smax} † | {_fmt(mc)} | {pct(mc)} | — | — |")
    if placement is not None and "unprotected" in placement:
        mc = placement["unprotected"]["test"]
        lines.append(f"| unprotected, σ = {smax} | {_fmt(mc)} | {pct(mc)} | — | — |")
    placements: dict[str, str] = {}  # long placements get a short label and a footnote
    if placement is not None:
        for method in ("none", "rl", "greedy", "all", "random"):
            m = placement["methods"].get(method)
            if m is None:
                continue
            ov = m["overhead"]
            budget = "" if m["within_budget"] else " (over budget)"
            lines.append(
                f"| Lipschitz + compensation ({method}: {_placement_label(m['placement'], placements)}), σ = {smax} "
                f"| {_fmt(m['test'])} | {pct(m['test'])} | {ov['params_pct']:.2f} % / {ov['macs_pct']:.2f} %{budget} "
                "| — |"
            )
    if quant is not None:
        ref = quant["test"]["reference"]
        best = quant["test"]["best"]
        e_ref = quant["search"]["reference"]["energy_pj"]
        e_best = quant["search"]["best"]["energy_pj"]
        lines.append(
            f"| + quantisation: uniform 8-bit ADC, 2-bit cells (reference), σ = {smax} | {_fmt(ref)} | {pct(ref)} "
            f"| as RL | {e_ref:.0f} pJ (100 %) |"
        )
        lines.append(
            f"| + quantisation search: {quant['search']['best']['label']}, σ = {smax} | {_fmt(best)} | {pct(best)} "
            f"| as RL | {e_best:.0f} pJ ({100 * e_best / e_ref:.1f} %, saving {quant['saving_pct']:.1f} %) |"
        )
    perchip = results.get("perchip")
    if perchip is not None and perchip.get("finetuned") is not None:
        mc = perchip["finetuned"]
        lines.append(
            f"| extension (not in P3): RL branches fine-tuned per chip ({perchip['images']} labelled images, "
            f"{perchip['steps']} steps), σ = {smax} | {_fmt(mc)} | {pct(mc)} | as RL | — |"
        )
    if perchip is not None and perchip.get("bn_adapt") is not None:
        mc = perchip["bn_adapt"]
        lines.append(
            f"| extension (P1/P2): unprotected + BN adaptation ({perchip['bn_images']} unlabelled images), "
            f"σ = {smax} | {_fmt(mc)} | {pct(mc)} | — | — |"
        )
    if labels["sweep_images"] is not None:
        lines += ["", f"† σ sweep: {labels['sweep_chips']} chips, {labels['sweep_images']} test images."]
    for label, layers in placements.items():
        lines.append(f"{label}: {layers}.")
    if sweep.get("plain"):
        lines += [
            "",
            f"σ sweep ({labels['sweep_images']} test images, {labels['sweep_chips']} chips, mean ± 95 % CI; every "
            "chip a sweep trial in the run's results store `p3.sqlite`: `xbarlab report p3.sqlite -o DIR`):",
            "",
            "| σ | unprotected | Lipschitz |",
            "|---:|---:|---:|",
        ]
        for sigma in labels["sweep_sigmas"]:
            key = f"{sigma:g}"
            lines.append(f"| {key} | {_fmt(sweep['plain'].get(key))} | {_fmt(sweep.get('lipschitz', {}).get(key))} |")
    if quant is not None:
        lines += _pareto_lines(quant)
    figures = write_figures(cfg, out, results)
    if figures:
        lines += ["", "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures)]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def _placement_label(layers: Sequence[str], footnotes: dict[str, str]) -> str:
    """Up to four layer names inline; a longer placement becomes ``placement A (n layers)`` with a footnote."""
    if len(layers) <= 4:
        return ", ".join(layers) or "none"
    text = ", ".join(layers)
    for label, known in footnotes.items():
        if known == text:
            return f"{label} ({len(layers)} layers)"
    label = f"placement {chr(ord('A') + len(footnotes))}"
    footnotes[label] = text
    return f"{label} ({len(layers)} layers)"


def _pareto_lines(quant: dict[str, Any]) -> list[str]:
    """The quantisation search's Pareto front (search chips and images) as a Markdown table."""
    ref_e = quant["search"]["reference"]["energy_pj"]
    lines = [
        "",
        f"Pareto front of the quantisation search ({quant['search_chips']} search chips, {quant['search_images']} "
        "held-out images; accuracy ↑, ADC energy ↓):",
        "",
        "| setting | accuracy (%) | ADC energy (pJ / inference) | of uniform 8-bit |",
        "|---|---:|---:|---:|",
    ]
    for p in sorted(quant["search"]["front"], key=lambda p: p["energy_pj"]):
        lines.append(
            f"| {p['label']} | {p['accuracy']:.2f} | {p['energy_pj']:.0f} | {100 * p['energy_pj'] / ref_e:.1f} % |"
        )
    return lines


def write_figures(cfg: P3Config, out: Path, results: dict[str, Any]) -> list[Path]:
    """``sweep.png`` (accuracy vs σ, plain and Lipschitz, 95 % CI) and ``quant_pareto.png`` (every evaluated
    quantisation setting, its Pareto front, the reference and the chosen setting) in ``out``."""
    from xbarlab.reports.plots import curve_plot, points_pareto_plot

    written: list[Path] = []
    sweep = results.get("sweep") or {}
    clean = results.get("models", {}).get("plain", {}).get("clean_accuracy")
    model = _labels(cfg, results)["model"]
    curves = {
        label: [
            (float(k), mc["mean"], mc["ci95_low"], mc["ci95_high"])
            for k, mc in sweep.get(name, {}).items()
            if isinstance(mc, dict)
        ]
        for name, label in (("plain", "unprotected"), ("lipschitz", "Lipschitz"))
    }
    path = curve_plot(
        curves,
        out / "sweep.png",
        xlabel="log-normal σ",
        ylabel="accuracy (%)",
        title=f"{model}: accuracy vs variation ({sweep.get('chips')} chips, 95 % CI)",
        hline=(clean, "clean (digital)") if clean is not None else None,
    )
    if path is not None:
        written.append(path)
    quant = results.get("quant")
    if quant is not None:
        pts = [(p["energy_pj"], p["accuracy"], p["label"]) for p in quant["search"]["points"]]
        path = points_pareto_plot(
            pts,
            out / "quant_pareto.png",
            xlabel="ADC energy per inference (pJ)",
            ylabel="accuracy on the search chips (%)",
            title=f"{model}, σ = {quant['sigma']:g}: quantisation search",
            highlight=(quant["search"]["reference"]["label"], quant["search"]["best"]["label"]),
        )
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ driver
