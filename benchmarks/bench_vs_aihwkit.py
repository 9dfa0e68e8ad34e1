"""xbarlab vs IBM aihwkit 1.2.0 in one process: forward speed and PCM fidelity (issue 15).

Runs inside ``.venv-aihwkit`` (built by ``scripts/build_aihwkit.sh``, which also installs xbarlab): ``make bench-peers``
or ``.venv-aihwkit/bin/python benchmarks/bench_vs_aihwkit.py [--fidelity]``.

* Speed (default): ResNet-20, input 3×32×32, batch 256 (as ``xbarlab bench``), random weights, 512×512 tiles;
  digital, xbarlab and aihwkit forwards timed alternately (warm-up, then the median of ``--repeats`` rounds) on
  three matched configurations. Writes ``benchmarks/results/bench_vs_aihwkit.md``.
* ``--fidelity``: the shipped ResNet-20 (Fashion-MNIST, 1×28×28), every layer analog, perfect IO, 512×512 tiles;
  aihwkit ``PCMLikeNoiseModel`` + ``GlobalDriftCompensation`` vs xbarlab ``pcm-nandakumar`` + global drift
  compensation, ``--chips`` chips a side at 1 h / 1 day / 1 year on ``--images`` test images. Results are appended
  chip by chip to ``benchmarks/results/bench_vs_aihwkit_fidelity.jsonl`` (resumable: chips already there are
  skipped), with per-layer effective-weight errors for each chip; the summary goes to
  ``benchmarks/results/bench_vs_aihwkit_fidelity.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
TIMES_S = {"1 h": 3600.0, "1 day": 86400.0, "1 year": 365.25 * 86400.0}
TILE = 512
XBARLAB_SIDES = {"xbarlab": TILE, "xbarlab-64x64": 64}
"""Fidelity sides run by xbarlab and their tile size (rows = cols); ``xbarlab-64x64`` is the tile-size study."""
AIHWKIT_SIDES = {"aihwkit": TILE, "aihwkit-1tile": 0}
"""Fidelity sides run by aihwkit and their ``mapping.max_input_size`` / ``max_output_size``. aihwkit splits a
layer larger than the tile into *equal* pieces (576 rows → 2 × 288) and scales and drift-compensates every
piece on its own; ``aihwkit-1tile`` (0: no split) keeps each layer on one tile, i.e. per-layer weight scaling and
per-layer drift compensation, as xbarlab does (docs/peers-fidelity.md, finding 3)."""
AIHWKIT_PAIR_SIDES = {"aihwkit-1tile-pairs": 0}
"""aihwkit sides whose noise model keeps each device of the differential pair from programming to read-out
(:func:`pair_keeping_pcm_model`), with their tile size. Stock aihwkit 1.2.0 stores the programmed *weights* and
converts them back to one fresh pair at every drift (docs/peers-fidelity.md, finding 4)."""
# aihwkit IOParameters: out_bound 12, out_res 1/(2^9 − 2) of the full range 2·12 → LSB = 24/510; out_noise 0.06.
AIHWKIT_OUT_NOISE = 0.06
AIHWKIT_ADC_LSB = 2 * 12.0 / (2**9 - 2)
W_NOISE = 0.02
"""Per-MVM device read noise of configuration (c): σ = 0.02 of the maximum weight / G_on."""
AIHWKIT_CPU_SAMPLER = (
    "aihwkit 1.2.0 on the CPU draws its forward noise (`out_noise`, `w_noise`) from a fixed list of 32,768 N(0, 1) "
    "values per tile, made once when the tile is built and indexed by C `rand() % 32768` (`RNG<T>::sampleGauss`, "
    'src/rpucuda/rng.h: "Faster approximative RNG for CPU"). The matched xbarlab sampler is `pooled` '
    "(docs/sampling.md: a fresh pool of n/16 exact draws per call, read in 64-value blocks at random offsets); "
    "`exact` (the default, torch.randn per draw) is timed as well."
)
"""What each tool's per-MVM Gaussian sampler is (configurations (b) and (c))."""

# Each configuration: (label, xbarlab overrides on top of pcm-nandakumar, aihwkit settings, description rows).
CONFIGS: dict[str, dict[str, Any]] = {
    "a": {
        "label": "(a) static PCM noise only, perfect IO, drift to 1 h",
        "xbarlab": {},
        "aihwkit": {"perfect": True},
        "xbarlab_text": "pcm-nandakumar (prog. noise σ(g), drift ν(g), frozen 1/f), no DAC/ADC, t = 1 h",
        "aihwkit_text": "PCMLikeNoiseModel(g_max=25), forward.is_perfect=True, drift_analog_weights(3600)",
    },
    "b": {
        "label": "(b) 7-b DAC / 9-b ADC / per-MVM output noise",
        "xbarlab": {"dac.bits": 7, "adc.bits": 9, "adc.noise_lsb": AIHWKIT_OUT_NOISE / AIHWKIT_ADC_LSB},
        "aihwkit": {"perfect": False},
        "xbarlab_text": f"(a) + dac.bits 7, adc.bits 9, adc.noise_lsb {AIHWKIT_OUT_NOISE / AIHWKIT_ADC_LSB:.3f}",
        "aihwkit_text": "(a) but is_perfect=False: inp_res 1/126, out_res 1/510, out_bound 12, out_noise 0.06",
        "samplers": ("exact", "pooled"),
    },
    "c": {
        "label": "(c) (b) + per-MVM device read noise",
        "xbarlab": {
            "dac.bits": 7,
            "adc.bits": 9,
            "adc.noise_lsb": AIHWKIT_OUT_NOISE / AIHWKIT_ADC_LSB,
            "read_noise.kind": "relative_to_G_on",
            "read_noise.sigma": W_NOISE,
            "read_noise.mode": "per_mvm",
        },
        "aihwkit": {"perfect": False, "w_noise": W_NOISE},
        "xbarlab_text": f"(b) + read_noise relative_to_G_on σ {W_NOISE} per_mvm (replaces frozen 1/f)",
        "aihwkit_text": f"(b) + w_noise_type ADDITIVE_CONSTANT, w_noise {W_NOISE} (frozen 1/f kept)",
        "samplers": ("exact", "pooled"),
    },
}


def xbarlab_hw(overrides: dict[str, Any], tile: int = TILE) -> Any:
    """pcm-nandakumar at ``tile``² (default 512²), full-precision weights, every layer analog, plus ``overrides``."""
    from xbarlab.presets import load_preset

    base = {"crossbar.rows": tile, "crossbar.cols": tile, "weights.quantize": False, "keep_digital": []}
    return load_preset("pcm-nandakumar").override({**base, **overrides})


def pair_keeping_pcm_model() -> Any:
    """aihwkit's ``PCMLikeNoiseModel(g_max=25)`` changed in one respect: the drift and read noise act on the two
    *programmed conductances* of each pair, as on a chip, instead of on a fresh pair converted back from the
    programmed weights.

    Stock 1.2.0 (``BaseNoiseModel.apply_drift_noise``) calls ``convert_to_conductances(programmed_weights)``: the
    pair (g⁺, g⁻), both non-zero after programming noise, becomes (g⁺ − g⁻, 0) rescaled so that the largest
    programmed |weight| is g_max. The device programmed to 0 µS then has no read noise and no drift of its own, and
    the ν drawn for a device is applied to the other one wherever programming flipped a weight's sign. Here the
    programmed conductances and the conversion scale are kept with the drift coefficients and drifted as they are.
    """
    from aihwkit.inference import PCMLikeNoiseModel

    class PairKeepingPCMLikeNoiseModel(PCMLikeNoiseModel):  # type: ignore[misc]
        """PCMLikeNoiseModel whose drift step reads the programmed conductances, not the programmed weights."""

        @torch.no_grad()
        def apply_programming_noise(self, weights: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
            targets, params = self.g_converter.convert_to_conductances(weights)
            programmed = [self.apply_programming_noise_to_conductance(g) for g in targets]
            nus = [self.generate_drift_coefficients(g) for g in targets]
            noisy = self.g_converter.convert_back_to_weights(programmed, params)
            return noisy, [nus, programmed, params]

        @torch.no_grad()
        def apply_drift_noise(
            self, weights: torch.Tensor, drift_noise_parameters: list[Any], t_inference: float
        ) -> Any:
            nus, programmed, params = drift_noise_parameters
            drifted = [
                self.apply_drift_noise_to_conductance(g, nu, t_inference) for g, nu in zip(programmed, nus, strict=True)
            ]
            return self.g_converter.convert_back_to_weights(drifted, params)

    return PairKeepingPCMLikeNoiseModel(g_max=25.0)


def aihwkit_config(perfect: bool, w_noise: float = 0.0, tile: int = TILE, keep_pairs: bool = False) -> Any:
    """aihwkit InferenceRPUConfig: PCMLikeNoiseModel (``keep_pairs``: :func:`pair_keeping_pcm_model`), global drift
    compensation, ``tile``² tiles (0: one tile per layer), digital bias."""
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.simulator.configs import InferenceRPUConfig, WeightNoiseType

    rpu = InferenceRPUConfig()
    rpu.mapping.max_input_size = tile
    rpu.mapping.max_output_size = tile
    rpu.mapping.digital_bias = True
    rpu.noise_model = pair_keeping_pcm_model() if keep_pairs else PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    rpu.forward.is_perfect = perfect
    if not perfect:
        rpu.forward.inp_res = 1 / (2**7 - 2)
        rpu.forward.out_res = 1 / (2**9 - 2)
        rpu.forward.out_bound = 12.0
        rpu.forward.out_noise = AIHWKIT_OUT_NOISE
    if w_noise > 0:
        rpu.forward.w_noise_type = WeightNoiseType.ADDITIVE_CONSTANT
        rpu.forward.w_noise = w_noise
    return rpu


def make_xbarlab_chip(model: nn.Module, hw: Any, seed: int, t_s: float, calib: torch.Tensor) -> nn.Module:
    """Convert, program (seed), calibrate converters, drift to ``t_s`` and install global drift compensation."""
    import xbarlab
    from xbarlab.chip import calibrate
    from xbarlab.conversion import convert
    from xbarlab.mitigation.drift_compensation import compensate, record_reference

    chip = convert(model, hw, example_input=calib[:2])
    xbarlab.program(chip, seed)
    calibrate(chip, [calib], num_batches=1)
    record_reference(chip)
    xbarlab.drift(chip, t_s)
    compensate(chip)
    return chip.eval()


def _move_xbarlab(chip: nn.Module, t_s: float) -> None:
    """Drift a programmed xbarlab chip to ``t_s`` (s) and re-install global drift compensation."""
    import xbarlab
    from xbarlab.mitigation.drift_compensation import compensate

    xbarlab.drift(chip, t_s)
    compensate(chip)


def make_aihwkit_chip(model: nn.Module, rpu: Any, seed: int, t_s: float) -> nn.Module:
    """convert_to_analog, program_analog_weights, drift_analog_weights(t_s) (global drift compensation inside)."""
    import copy

    from aihwkit.nn.conversion import convert_to_analog

    torch.manual_seed(seed)
    chip = convert_to_analog(copy.deepcopy(model), rpu).eval()
    chip.program_analog_weights()
    chip.drift_analog_weights(t_s)
    return chip


def _alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median time (s) of each function, timed round-robin ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.no_grad()
def run_speed(repeats: int, batch: int) -> str:
    """Time the three matched configurations; returns the markdown report."""
    import aihwkit

    from xbarlab.models import build_model

    model = build_model("resnet20", in_channels=3, num_classes=10).eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lines = [
        f"# xbarlab vs aihwkit {aihwkit.__version__}: ResNet-20 forward, input 3×32×32, batch {batch}",
        "",
        f"CPU, torch {torch.__version__}, `torch.set_num_threads(2)`, {TILE}×{TILE} tiles, every layer analog, "
        f"random weights; digital / xbarlab / aihwkit timed alternately, median of {repeats} rounds after warm-up.",
        "",
        "| config | digital (s) | xbarlab (s) | aihwkit (s) | xbarlab / digital | aihwkit / digital | "
        "xbarlab speed-up vs aihwkit |",
        "|---|---|---|---|---|---|---|",
    ]
    settings = ["", "| config | xbarlab settings | aihwkit settings |", "|---|---|---|"]
    for key, cfg in CONFIGS.items():
        samplers = cfg.get("samplers", ("exact",))
        fns: dict[str, Callable[[], Any]] = {"digital": partial(model, x)}
        for sampler in samplers:
            hw = xbarlab_hw({**cfg["xbarlab"], "sampling.gaussian": sampler})
            fns[sampler] = partial(make_xbarlab_chip(model, hw, 0, 3600.0, x[:64]), x)
        fns["aihwkit"] = partial(make_aihwkit_chip(model, aihwkit_config(**cfg["aihwkit"]), 0, 3600.0), x)
        med = _alternate(fns, repeats)
        d, ai = med["digital"], med["aihwkit"]
        for sampler in samplers:
            xb = med[sampler]
            label = cfg["label"] + (f", xbarlab sampler `{sampler}`" if len(samplers) > 1 else "")
            row = f"| {label} | {d:.3f} | {xb:.3f} | {ai:.3f} | {xb / d:.2f}× | {ai / d:.2f}× | {ai / xb:.2f}× |"
            print(row, flush=True)
            lines.append(row)
        settings.append(f"| {key} | {cfg['xbarlab_text']} | {cfg['aihwkit_text']} |")
    settings += ["", f"Gaussian samplers of (b) and (c): {AIHWKIT_CPU_SAMPLER}"]
    return "\n".join(lines + settings) + "\n"


# ----------------------------------------------------------------------------------------------------- fidelity
def _test_set(images: int) -> tuple[torch.Tensor, torch.Tensor]:
    from xbarlab.data import get_dataset

    ds = get_dataset("fashion-mnist", "test", augment=False)
    xs, ys = [], []
    for i in range(images):
        x, y = ds[i]
        xs.append(x)
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return 100.0 * correct / len(x)


def aihwkit_effective_weights(chip: nn.Module) -> dict[str, torch.Tensor]:
    """Per analog layer name: α·W_eff of an aihwkit chip (α: its global drift-compensation factor; for a layer
    split over several tiles, the mean of the tiles' factors, so the figure is then approximate)."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in chip.named_modules():
        if not hasattr(mod, "analog_tiles"):
            continue
        weights = mod.get_weights()
        # analog layers only: containers (the model, AnalogSequential) return a dict of their layers' weights
        alphas = [float(getattr(t, "alpha", torch.ones(1)).mean()) for t in mod.analog_tiles()]
        if isinstance(weights, tuple) and alphas:
            out[name] = statistics.mean(alphas) * weights[0].detach()
    return out


def xbarlab_effective_weights(chip: nn.Module) -> dict[str, torch.Tensor]:
    """Per analog layer name: s·W_eff of an xbarlab chip (s: its installed drift-compensation factor)."""
    from xbarlab.layers import analog_layers
    from xbarlab.mitigation.drift_compensation import compensation_scales

    scales = compensation_scales(chip)
    return {
        layer.layer_name: float(scales.get(layer.layer_name, torch.tensor(1.0)).mean())
        * layer.effective_weight().detach()
        for layer in analog_layers(chip)
    }


def _relative_errors(effective: dict[str, torch.Tensor], digital: nn.Module) -> dict[str, float]:
    """Per layer: ‖W_eff − W‖ / ‖W‖ of already compensated effective weights against the digital model's."""
    ref = dict(digital.named_modules())
    out: dict[str, float] = {}
    for name, w_eff in effective.items():
        if name not in ref or not hasattr(ref[name], "weight"):
            continue
        w = ref[name].weight.detach().reshape(w_eff.shape)
        out[name] = float((w_eff - w).norm() / w.norm())
    return out


def _aihwkit_weight_errors(chip: nn.Module, digital: nn.Module) -> dict[str, float]:
    """Per layer: ‖α·W_eff − W‖ / ‖W‖ (:func:`aihwkit_effective_weights`)."""
    return _relative_errors(aihwkit_effective_weights(chip), digital)


def _xbarlab_weight_errors(chip: nn.Module, digital: nn.Module) -> dict[str, float]:
    """Per layer: ‖s·W_eff − W‖ / ‖W‖ (:func:`xbarlab_effective_weights`)."""
    return _relative_errors(xbarlab_effective_weights(chip), digital)


def run_fidelity(
    chips: int,
    images: int,
    out: Path,
    sides: tuple[str, ...] = ("aihwkit", "xbarlab"),
    times: tuple[str, ...] = tuple(TIMES_S),
) -> None:
    """Incremental Monte-Carlo study; one JSON line per (side, chip, time) of ``times`` (names of TIMES_S)."""
    from xbarlab.checkpoint import load_pretrained

    model, _ = load_pretrained("resnet20-fmnist")
    model.eval()
    x, y = _test_set(images)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r["images"] == images:
                done.add((r["side"], r["chip"], r["time"]))
    print(f"digital accuracy on {images} images: {_accuracy(model, x, y):.2f} %", flush=True)
    for chip_id in range(chips):
        for side in sides:
            todo = [t for t in times if (side, chip_id, t) not in done]
            if not todo:
                continue
            seed = 1000 + chip_id
            if side in AIHWKIT_SIDES or side in AIHWKIT_PAIR_SIDES:
                pairs = side in AIHWKIT_PAIR_SIDES
                tile = AIHWKIT_PAIR_SIDES[side] if pairs else AIHWKIT_SIDES[side]
                hw = aihwkit_config(perfect=True, tile=tile, keep_pairs=pairs)
                c = make_aihwkit_chip(model, hw, seed, TIMES_S[todo[0]])
            else:
                c = make_xbarlab_chip(model, xbarlab_hw({}, XBARLAB_SIDES[side]), seed, TIMES_S[todo[0]], x[:64])
            for t_name in todo:
                if side in AIHWKIT_SIDES or side in AIHWKIT_PAIR_SIDES:
                    c.drift_analog_weights(TIMES_S[t_name])  # re-drifts from the programmed state
                    errs = _aihwkit_weight_errors(c, model)
                else:
                    _move_xbarlab(c, TIMES_S[t_name])
                    errs = _xbarlab_weight_errors(c, model)
                acc = _accuracy(c, x, y)
                rec = {
                    "side": side,
                    "chip": chip_id,
                    "time": t_name,
                    "images": images,
                    "acc": acc,
                    "weight_rel_err": errs,
                }
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{side:8s} chip {chip_id:2d} {t_name:6s} {acc:6.2f} %", flush=True)


def summarize_fidelity(path: Path) -> str:
    """Markdown table: mean, std, median, worst chip per side and time."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    lines = [
        "| time | side | images | chips | mean (%) | std | median | worst chip (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t_name, side, n in sorted(
        {(r["time"], r["side"], r["images"]) for r in recs}, key=lambda k: (list(TIMES_S).index(k[0]), k[1], k[2])
    ):
        accs = [r["acc"] for r in recs if r["side"] == side and r["time"] == t_name and r["images"] == n]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(
            f"| {t_name} | {side} | {n} | {len(accs)} | {statistics.mean(accs):.2f} | {std:.2f} | "
            f"{statistics.median(accs):.2f} | {min(accs):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--chips", type=int, default=20)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--sides",
        default="aihwkit,xbarlab",
        help="comma-separated: aihwkit, aihwkit-1tile, aihwkit-1tile-pairs, xbarlab, xbarlab-64x64",
    )
    parser.add_argument("--times", default=",".join(TIMES_S), help="comma-separated read times: " + ", ".join(TIMES_S))
    parser.add_argument("--summary-only", action="store_true", help="only rewrite the fidelity summary")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: both cores of this machine)")
    args = parser.parse_args()
    sides = tuple(args.sides.split(","))
    allowed = [*AIHWKIT_SIDES, *AIHWKIT_PAIR_SIDES, *XBARLAB_SIDES]
    unknown = [s for s in sides if s not in allowed]
    if unknown:
        parser.error(f"--sides: unknown side(s) {unknown}; allowed: {', '.join(allowed)}")
    times = tuple(args.times.split(","))
    if any(t not in TIMES_S for t in times):
        bad = [t for t in times if t not in TIMES_S]
        parser.error(f"--times: unknown time(s) {bad}; allowed: {', '.join(TIMES_S)}")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    if args.fidelity:
        jsonl = RESULTS / "bench_vs_aihwkit_fidelity.jsonl"
        if not args.summary_only:
            run_fidelity(args.chips, args.images, jsonl, sides, times)
        md = summarize_fidelity(jsonl)
        (RESULTS / "bench_vs_aihwkit_fidelity.md").write_text(md)
        print(md)
        return
    md = run_speed(args.repeats, args.batch)
    (RESULTS / "bench_vs_aihwkit.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
