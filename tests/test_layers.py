"""Analog layers and the chip lifecycle: equivalence, mapping, tiles/ADC, determinism, storage, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbarlab
from xbarlab import layers as layers_mod
from xbarlab.conversion import ConversionError
from xbarlab.converters import quantize_uniform
from xbarlab.layer_types import AnalogConv, AnalogLinear
from xbarlab.layers import NotProgrammedError, analog_layers


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4, padding_mode="reflect"),
        nn.ReLU(),
        nn.Conv2d(12, 70, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(70 * 4 * 4, 10),
    ).eval()


X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_ideal_chip_equals_digital_model_bit_exact() -> None:
    model = _model()
    chip = xbarlab.program(xbarlab.convert(model, xbarlab.load_preset("ideal")), 0)
    assert torch.equal(chip(X), model(X))
    conv1d = nn.Sequential(nn.Conv1d(2, 6, 3, padding="same", dilation=2, groups=2), nn.Flatten(), nn.Linear(60, 3))
    x1 = torch.randn(4, 2, 10)
    chip1 = xbarlab.program(xbarlab.convert(conv1d, xbarlab.load_preset("ideal")), 0)
    assert torch.equal(chip1(x1), conv1d(x1))


def test_conversion_report_and_keep_digital() -> None:
    model = _model()
    chip = xbarlab.convert(model, xbarlab.load_preset("rram"))
    report = chip.xbarlab_report
    assert [r.name for r in report.analog] == ["0", "3", "5"]
    assert [(r.name, r.analog) for r in report.digital] == [("8", False)]
    assert "classifier" in report.digital[0].reason
    assert isinstance(chip[8], nn.Linear) and isinstance(chip[0], AnalogConv)
    assert isinstance(model[0], nn.Conv2d)  # the input model is untouched
    hw = xbarlab.load_preset("ideal").override({"keep_digital": ["3"]})
    chip = xbarlab.convert(model, hw)
    assert isinstance(chip[3], nn.Conv2d) and isinstance(chip[8], AnalogLinear)


@pytest.mark.parametrize("mapping", ["differential", "offset"])
@pytest.mark.parametrize(("bits", "per_cell"), [(8, 4), (8, 3), (6, 2), (4, 4)])
def test_quantisation_slicing_mapping_round_trip_is_exact(mapping: str, bits: int, per_cell: int) -> None:
    torch.manual_seed(3)
    lin = nn.Linear(150, 70, bias=False)
    top = 2**bits - 1 if mapping == "differential" else 2 ** (bits - 1) - 1
    q = torch.randint(-top, top + 1, lin.weight.shape).double()
    q[0, 0] = top  # w_max is representable
    w_max = float(torch.tensor(2.55, dtype=torch.float32))
    with torch.no_grad():
        lin.weight.copy_((q * (w_max / top)).float())
    hw = xbarlab.load_preset("ideal").override(
        {
            "weights.quantize": True,
            "weights.bits": bits,
            "weights.bits_per_cell": per_cell,
            "weights.mapping": mapping,
            "weights.noise_granularity": "slice",
            "crossbar.rows": 32,
            "crossbar.cols": 16,
        }
    )
    chip = xbarlab.program(xbarlab.convert(nn.Sequential(lin), hw), 0)
    layer = chip[0]
    assert layer.layout.num_slices == -(-bits // per_cell)
    assert torch.equal(layer.effective_weight(), lin.weight)


def test_quantisation_error_is_bounded_by_half_a_step() -> None:
    model = _model()
    hw = xbarlab.load_preset("rram").override({"read_noise.kind": "none", "dac.bits": None})
    chip = xbarlab.program(xbarlab.convert(model, hw), 0)
    for layer in analog_layers(chip):
        step = float(layer.weight.abs().max()) / 255
        err = (layer.effective_weight() - layer.weight).abs().max()
        assert float(err) <= step / 2 * (1 + 1e-5)


def _reference_tiled_linear(x: torch.Tensor, w_slices: torch.Tensor, rows: int, bits: int, rng: torch.Tensor):
    """Naive reference: loop over row tiles and slices, quantise each partial sum, shift-and-add."""
    k = w_slices.shape[1]
    out = torch.zeros(x.shape[0], w_slices.shape[2], dtype=torch.float64)
    for s in range(w_slices.shape[0]):
        for start in range(0, k, rows):
            partial = x[:, start : start + rows].double() @ w_slices[s, start : start + rows].double()
            step = float(rng[s]) / (2 ** (bits - 1) - 1)
            out += torch.round(partial / step).clamp(-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * step
    return out


def test_tiled_adc_path_matches_naive_reference() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(100, 20, bias=False)
    hw = xbarlab.load_preset("ideal").override(
        {"weights.quantize": True, "weights.noise_granularity": "slice", "adc.bits": 5, "crossbar.rows": 32}
    )
    chip = xbarlab.program(xbarlab.convert(nn.Sequential(lin), hw), 0)
    x = torch.rand(16, 100)
    xbarlab.calibrate(chip, [x])
    layer = chip[0]
    lay = layer.layout
    # per-slice weights (S, K, N) recovered from the tile buffer
    w_slices = layer.w_tiles.reshape(lay.tiles_r, lay.rows, lay.num_slices, lay.n).permute(2, 0, 1, 3)
    w_slices = w_slices.reshape(lay.num_slices, lay.k_pad, lay.n)[:, : lay.k]
    expected = _reference_tiled_linear(x, w_slices, lay.rows, 5, layer.adc_range)
    assert torch.allclose(chip(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_tiled_conv_path_matches_direct_path_with_fine_adc() -> None:
    model = _model()
    # no random draws: different tile shapes would otherwise sample different chips
    base = xbarlab.load_preset("rram").override(
        {"dac.bits": None, "weights.noise_granularity": "slice", "read_noise.kind": "none"}
    )
    direct = xbarlab.program(xbarlab.convert(model, base), 5)
    tiled = xbarlab.program(xbarlab.convert(model, base.override({"adc.bits": 16, "crossbar.rows": 20})), 5)
    xbarlab.calibrate(tiled, [X])
    with torch.no_grad():
        ref = direct(X)
        assert torch.allclose(tiled(X), ref, atol=1e-3 * float(ref.abs().max()))


def test_chunked_tiled_forward_is_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    hw = xbarlab.load_preset("rram").override({"adc.bits": 6})
    chip = xbarlab.program(xbarlab.convert(model, hw), 2)
    xbarlab.calibrate(chip, [X])
    whole = chip(X)
    monkeypatch.setattr(layers_mod, "MAX_PARTIAL_BYTES", 1)
    assert torch.allclose(chip(X), whole, atol=1e-6)


def test_converters_on_hand_computed_cases() -> None:
    x = torch.tensor([0.4, 0.6, -2.5, 5.0, -7.0, 1.5])
    # signed 3-bit, range 3: step 1, codes −3…3 (round half to even)
    assert quantize_uniform(x, 3, 3.0, signed=True).tolist() == [0.0, 1.0, -2.0, 3.0, -3.0, 2.0]
    # unsigned 2-bit, range 3: codes 0…3
    assert quantize_uniform(x, 2, 3.0, signed=False).tolist() == [0.0, 1.0, 0.0, 3.0, 0.0, 2.0]
    # noise in LSB shifts codes before rounding
    noisy = quantize_uniform(torch.zeros(2), 3, 3.0, signed=True, noise=torch.tensor([0.7, -0.7]))
    assert noisy.tolist() == [1.0, -1.0]


def test_dac_and_adc_range_calibration() -> None:
    lin = nn.Sequential(nn.Linear(4, 2, bias=False))
    hw = xbarlab.load_preset("ideal").override({"dac.bits": 4, "adc.bits": 4})
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.5, 0.25, 0.0, 1.0]])
    xbarlab.calibrate(chip, [x])
    layer = chip[0]
    assert float(layer.dac_range) == 3.0 and not bool(layer.dac_signed)
    xq = quantize_uniform(x, 4, 3.0, signed=False)
    assert float(layer.adc_range[0]) == pytest.approx(float((xq @ lin[0].weight.detach().T).abs().max()), rel=1e-6)
    pct = xbarlab.load_preset("ideal").override({"dac.bits": 8, "dac.range_mode": "percentile", "dac.percentile": 90})
    chip = xbarlab.program(xbarlab.convert(lin, pct), 0)
    data = torch.arange(1, 101, dtype=torch.float32).view(25, 4)
    xbarlab.calibrate(chip, [data])
    assert float(chip[0].dac_range) == 90.0


def test_determinism_and_independent_streams() -> None:
    model = _model()
    hw = xbarlab.load_preset("rram").override({"dac.bits": None, "faults.sa0_rate": 0.01})
    a = xbarlab.program(xbarlab.convert(model, hw), 7)
    b = xbarlab.program(xbarlab.convert(model, hw), 7)
    c = xbarlab.program(xbarlab.convert(model, hw), 8)
    assert torch.equal(a(X), b(X))
    assert not torch.equal(a(X), c(X))
    for la, lb in zip(analog_layers(a), analog_layers(b), strict=True):
        assert torch.equal(la.g_prog, lb.g_prog) and torch.equal(la.read_xi, lb.read_xi)
    # changing the fault rate keeps the read-noise draws (common random numbers)
    d = xbarlab.program(xbarlab.convert(model, hw.override({"faults.sa0_rate": 0.0})), 7)
    assert torch.equal(analog_layers(d)[0].read_xi, analog_layers(a)[0].read_xi)


def test_per_mvm_read_noise_has_the_exact_output_variance() -> None:
    torch.manual_seed(5)
    lin = nn.Sequential(nn.Linear(64, 4, bias=False))
    hw = xbarlab.load_preset("ideal").override(
        {"read_noise.kind": "absolute_uS", "read_noise.sigma": 0.5, "read_noise.mode": "per_mvm"}
    )
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    layer = chip[0]
    x = torch.rand(1, 64).expand(20000, 64).contiguous()
    y = chip(x)
    clean = x @ lin[0].weight.T
    # two devices per weight, each σ = 0.5 µS; one µS = w_max / ΔG weight units
    unit = float(lin[0].weight.detach().abs().max()) / (layer.hw.device.g_on_us - layer.hw.device.g_off_us)
    expected_std = math.sqrt(float((x[0] ** 2).sum()) * 2 * (0.5 * unit) ** 2)
    assert torch.allclose((y - clean).mean(0), torch.zeros(4), atol=5 * expected_std / math.sqrt(20000))
    assert torch.allclose((y - clean).std(0), torch.full((4,), expected_std), rtol=0.03)


def test_per_mvm_noise_through_the_adc_has_the_exact_variance_and_same_values_with_gradients() -> None:
    torch.manual_seed(5)
    lin = nn.Sequential(nn.Linear(100, 4, bias=False))
    hw = xbarlab.load_preset("ideal").override(
        {"read_noise.kind": "absolute_uS", "read_noise.sigma": 0.5, "read_noise.mode": "per_mvm", "adc.bits": 16}
    )
    x = torch.rand(1, 100).expand(20000, 100).contiguous()
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    xbarlab.calibrate(chip, [x[:64]])
    layer = chip[0]
    assert layer.layout.tiles_r == 2  # 100 rows on 64-row tiles: two partial sums (two ADC conversions) per output
    with torch.no_grad():
        y = chip(x)
    clean = x @ lin[0].weight.T
    unit = float(lin[0].weight.detach().abs().max()) / (layer.hw.device.g_on_us - layer.hw.device.g_off_us)
    expected_std = math.sqrt(float((x[0] ** 2).sum()) * 2 * (0.5 * unit) ** 2)
    assert torch.allclose((y - clean).std(0), torch.full((4,), expected_std), rtol=0.03)
    # the straight-through path (input requires grad) computes the very same values from the same noise stream
    again = xbarlab.program(xbarlab.convert(lin, hw), 0)
    xbarlab.calibrate(again, [x[:64]])
    with_grad = again(x[:500].clone().requires_grad_(True))
    with torch.no_grad():
        reference = xbarlab.program(xbarlab.convert(lin, hw), 0)
        xbarlab.calibrate(reference, [x[:64]])
        assert torch.equal(with_grad.detach(), reference(x[:500]))


def test_drift_scales_differential_weights_by_the_power_law() -> None:
    model = _model()
    hw = xbarlab.load_preset("fefet").override({"read_noise.kind": "none", "dac.bits": None})
    chip = xbarlab.program(xbarlab.convert(model, hw), 0)
    w0 = [la.effective_weight().clone() for la in analog_layers(chip)]
    xbarlab.drift(chip, 1e4)
    for la, w in zip(analog_layers(chip), w0, strict=True):
        assert torch.allclose(la.effective_weight(), w * 1e4**-0.1, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="t_seconds"):
        xbarlab.drift(chip, 0.1)


def test_save_and_load_reproduce_outputs(tmp_path: Path) -> None:
    model = _model()
    hw = xbarlab.load_preset("pcm-i").override({"adc.bits": 7, "drift.nu_std": 0.01, "faults.sa1_rate": 0.01})
    chip = xbarlab.program(xbarlab.convert(model, hw), 11)
    xbarlab.drift(chip, 1e3)
    xbarlab.calibrate(chip, [X])
    path = xbarlab.save_chip(chip, tmp_path / "chip")
    assert (tmp_path / "chip.safetensors").is_file() and (tmp_path / "chip.json").is_file()
    loaded = xbarlab.load_chip(_model(), path)
    assert torch.equal(loaded(X), chip(X))


def test_per_mvm_chip_continues_its_noise_stream_after_loading(tmp_path: Path) -> None:
    model = _model()
    hw = xbarlab.load_preset("rram").override({"adc.bits": 6, "read_noise.mode": "per_mvm"})
    chip = xbarlab.program(xbarlab.convert(model, hw), 4)
    xbarlab.calibrate(chip, [X])  # consumes part of the per-MVM stream
    xbarlab.save_chip(chip, tmp_path / "chip")
    loaded = xbarlab.load_chip(_model(), tmp_path / "chip")
    first = chip(X)
    assert torch.equal(loaded(X), first)
    assert torch.equal(loaded(X), chip(X)) and not torch.equal(chip(X), first)  # fresh draws, same streams


def test_chip_paths_append_suffixes_and_bare_layers_convert(tmp_path: Path) -> None:
    lin = nn.Linear(12, 5)
    hw = xbarlab.load_preset("rram").override({"keep_digital": [], "dac.bits": None, "read_noise.sigma": 0.5})
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    assert isinstance(chip, AnalogLinear) and chip.xbarlab_report.analog[0].name == "(model)"
    x = torch.randn(4, 12)
    assert not torch.equal(chip(x), lin(x))  # the layer really runs on the (noisy) crossbar
    other = xbarlab.program(xbarlab.convert(lin, hw.override({"read_noise.sigma": 0.1})), 0)
    xbarlab.save_chip(chip, tmp_path / "chip_sigma0.5")
    xbarlab.save_chip(other, tmp_path / "chip_sigma0.1.json")  # a trailing .json names the same base
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "chip_sigma0.1.json",
        "chip_sigma0.1.safetensors",
        "chip_sigma0.5.json",
        "chip_sigma0.5.safetensors",
    ]
    loaded = xbarlab.load_chip(lin, tmp_path / "chip_sigma0.5")
    assert loaded.xbarlab_hw.read_noise.sigma == 0.5 and torch.equal(loaded(x), chip(x))


def test_conversion_of_shared_subclassed_and_unsupported_modules() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(8, 8)
            self.dec = self.enc  # one module under two names
            self.emb = nn.Embedding(5, 8)
            self.att = nn.MultiheadAttention(8, 2)

            class Standardised(nn.Conv1d):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    w = (self.weight - self.weight.mean()) / self.weight.std()
                    return F.conv1d(x, w, self.bias)

            self.conv = Standardised(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.dec(torch.relu(self.enc(x)))
            h = self.att(h, h, h)[0]
            return self.conv(h.transpose(1, 2)).transpose(1, 2)

    torch.manual_seed(0)
    net = Net().eval()
    chip = xbarlab.convert(net, xbarlab.load_preset("ideal"))
    assert isinstance(chip.enc, AnalogLinear) and chip.dec is chip.enc
    where = {r.name: (r.analog, r.reason) for r in chip.xbarlab_report.layers}
    assert where["enc"][0] and "also used as 'dec'" in where["enc"][1]
    assert all(where[f"att.{p}"][0] for p in ("q_proj", "k_proj", "v_proj", "out_proj"))  # analog attention
    assert not where["emb"][0] and not where["conv"][0] and "overrides forward()" in where["conv"][1]
    x = torch.randn(3, 4, 8)
    with torch.no_grad():  # nothing changed its behaviour; the analog attention runs q/k/v as three GEMMs where
        # nn.MultiheadAttention runs one packed in_proj GEMM, so the two agree to float rounding, not bit for bit
        # (which bits differ depends on the CPU's GEMM kernels): the tolerance of tests/test_attention.py
        programmed = xbarlab.program(chip, 0)
        assert (programmed(x) - net(x)).abs().max() < 1e-5
        h = torch.relu(net.enc(x))  # the shared Linear alone is bit-exact
        assert torch.equal(programmed.dec(torch.relu(programmed.enc(x))), net.dec(h))


def test_patterns_that_match_no_layer_and_lazy_modules_are_errors() -> None:
    model = _model()
    message = r"keep_digital: pattern 'classifier' matches no .* its layers: 0, 3, 5, 8"
    with pytest.raises(ConversionError, match=message):
        xbarlab.convert(model, xbarlab.load_preset("rram").override({"keep_digital": ["classifier"]}))
    bad = {"layers": [{"pattern": "layer3.*", "settings": {"adc": {"bits": 5}}}]}
    with pytest.raises(ConversionError, match=r"layers\[0\]\.pattern: pattern 'layer3\.\*' matches no"):
        xbarlab.convert(model, xbarlab.load_preset("rram").override(bad))
    with pytest.raises(ConversionError, match="layer '0' \\(LazyLinear\\): parameters not initialised"):
        xbarlab.convert(nn.Sequential(nn.LazyLinear(3)), xbarlab.load_preset("rram"))


def test_overflowing_variation_and_bad_seeds_are_errors() -> None:
    import numpy as np

    hw = xbarlab.load_preset("rram").override({"programming.kind": "lognormal", "programming.sigma": 50.0})
    with pytest.raises(ValueError, match="analog layer '0': the chip's effective weights are not finite"):
        xbarlab.program(xbarlab.convert(_model(), hw), 0)
    chip = xbarlab.convert(_model(), xbarlab.load_preset("rram"))
    xbarlab.program(chip, np.int64(3))
    assert int(analog_layers(chip)[0].chip_seed) == 3
    for seed in (2**63, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"seed: invalid value .*; allowed: an integer in \[0, 2\*\*63 - 1\]"):
            xbarlab.program(chip, seed)  # type: ignore[arg-type]


def test_unbatched_conv_input_through_the_adc() -> None:
    conv = nn.Sequential(nn.Conv2d(2, 3, 3))
    chip = xbarlab.program(xbarlab.convert(conv, xbarlab.load_preset("ideal").override({"adc.bits": 16})), 0)
    x = torch.randn(2, 5, 5)
    xbarlab.calibrate(chip, [x.unsqueeze(0)])
    with torch.no_grad():
        assert chip(x).shape == (3, 3, 3)
        assert torch.allclose(chip(x), conv(x), atol=1e-3)


def test_gradients_flow_through_analog_layers() -> None:
    model = _model()
    hw = xbarlab.load_preset("rram").override({"adc.bits": 6})
    chip = xbarlab.program(xbarlab.convert(model, hw), 0)
    xbarlab.calibrate(chip, [X])
    x = X.clone().requires_grad_(True)
    chip(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert chip[1].weight.grad is not None  # BN γ upstream of analog layers gets a gradient


def test_bad_input_errors() -> None:
    with pytest.raises(ConversionError, match="no convertible layer"):
        xbarlab.convert(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), xbarlab.load_preset("rram"))
    bad = _model()
    with torch.no_grad():
        bad[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ConversionError, match="layer '3'"):
        xbarlab.convert(bad, xbarlab.load_preset("rram"))
    chip = xbarlab.convert(_model(), xbarlab.load_preset("rram"))
    with pytest.raises(NotProgrammedError, match="layer '0'"):
        chip(X)
    xbarlab.program(chip, 0)
    with pytest.raises(NotProgrammedError, match="DAC range not calibrated"):
        chip(X)
    with pytest.raises(ValueError, match="seed"):
        xbarlab.program(chip, -1)
    with pytest.raises(ValueError, match="no analog layers"):
        xbarlab.program(_model(), 0)


def test_bias_and_functional_padding_modes() -> None:
    torch.manual_seed(9)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode))
        hw = xbarlab.load_preset("ideal").override({"adc.bits": 16})
        chip = xbarlab.program(xbarlab.convert(conv, hw), 0)
        x = torch.randn(2, 2, 5, 5)
        xbarlab.calibrate(chip, [x])
        assert torch.allclose(chip(x), conv(x), atol=1e-3), mode
        assert torch.allclose(
            chip[0].ideal_forward(x),
            F.conv2d(
                F.pad(x, [1, 1, 1, 1], mode="constant" if mode == "zeros" else mode),
                conv[0].weight,
                conv[0].bias,
            ),
            atol=1e-6,
        )


def test_channels_last_models_keep_their_memory_format() -> None:
    from xbarlab.models import build_model, channels_last

    torch.manual_seed(0)
    net = channels_last(build_model("resnet20", in_channels=1, num_classes=10).eval())
    x = torch.randn(4, 1, 16, 16)
    chip = xbarlab.program(xbarlab.convert(net, xbarlab.load_preset("ideal")), 0)
    conv = analog_layers(chip)[1]  # 16 input channels (the first layer's single channel is both formats)
    assert conv.w_ni.is_contiguous(memory_format=torch.channels_last) and not conv.w_ni.is_contiguous()
    with torch.no_grad():
        assert torch.equal(chip(x), net(x))
    hw = xbarlab.load_preset("rram").override({"read_noise.mode": "per_mvm", "dac.bits": None})
    noisy = xbarlab.program(xbarlab.convert(net, hw), 0)
    assert not analog_layers(noisy)[1].var_ni.is_contiguous()


# ---------------------------------------------------------------------------------------------- converter ranges


def _calibration_chip(override: dict[str, object]) -> nn.Module:
    hw = xbarlab.load_preset("rram").override({**override, "keep_digital": ["8"]})
    return xbarlab.program(xbarlab.convert(_model(), hw), 0)


def test_non_finite_calibration_data_is_refused_naming_the_layer_and_batch() -> None:
    from xbarlab.chip import calibrate
    from xbarlab.converters import ConverterRangeError

    bad = X.clone()
    bad[1, 0, 2, 3] = float("nan")  # one NaN pixel in the second batch
    chip = _calibration_chip({})
    with pytest.raises(ConverterRangeError, match=r"analog layer '0': DAC calibration input not finite .* batch 1 "):
        calibrate(chip, [X, bad, X], num_batches=3)
    assert analog_layers(chip)[0].dac_range is None  # nothing stored: the chip refuses to run
    with pytest.raises(NotProgrammedError, match="DAC range not calibrated"):
        chip(X)
    adc_only = _calibration_chip({"dac.bits": None, "adc.bits": 6})
    inf = X.clone()
    inf[0, 1, 0, 0] = float("inf")
    with pytest.raises(ConverterRangeError, match=r"analog layer '0': ADC calibration partial sums not finite .* 2 "):
        calibrate(adc_only, [X, X, inf], num_batches=3)


def test_a_zero_converter_range_is_refused() -> None:
    from xbarlab.chip import calibrate
    from xbarlab.converters import ConverterRangeError

    chip = _calibration_chip({})
    zeros = torch.zeros_like(X)
    with pytest.raises(
        ConverterRangeError,
        match=r"analog layer '0': DAC range calibrated to 0 \(every observed value is 0 in 2 calibration batches\); "
        "allowed: a finite range > 0",
    ):
        calibrate(chip, [zeros, zeros], num_batches=2)
    calibrate(chip, [X, zeros], num_batches=2)  # one batch with data is enough
    assert float(analog_layers(chip)[0].dac_range) == pytest.approx(float(X.abs().max()))


def test_range_observer_keeps_statistics_on_the_device_and_reads_them_once() -> None:
    from xbarlab.converters import RangeObserver

    obs = RangeObserver("max", 99.0, channels=2)
    obs.update(torch.tensor([1.0, -3.0]), channel=0, batch=0)
    obs.update(torch.tensor([0.5, 2.5]), channel=1, batch=0)
    assert obs.min_value == -3.0 and obs.result().tolist() == [3.0, 2.5]
    obs.update(torch.tensor([0.5, float("nan")]), channel=1, batch=4)
    obs.update(torch.tensor([2.0, float("inf")]), channel=1, batch=6)
    assert obs.first_nonfinite_batch() == [None, 4] and obs.updates == [1, 3]
    meta = RangeObserver("percentile", 50.0, max_samples=4)
    meta.update(torch.ones(10, device="meta"), batch=0)  # subsampled on meta without a host read
    assert meta.maximum.device.type == "meta" and meta.result().device.type == "meta"
    pct = RangeObserver("percentile", 50.0)
    pct.update(torch.arange(1.0, 11.0))
    assert pct.result().tolist() == [5.0]


def test_quantize_uniform_zero_range_channel_maps_to_zero_without_a_host_read() -> None:
    x = torch.tensor([[1.0, -2.0], [1.0, -2.0]])
    r = torch.tensor([[0.0], [3.0]])
    assert quantize_uniform(x, 3, r, signed=True).tolist() == [[0.0, 0.0], [1.0, -2.0]]
    y = quantize_uniform(x.to("meta"), 3, r.to("meta"), signed=True)
    assert y.device.type == "meta" and y.shape == x.shape
