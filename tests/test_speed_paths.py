"""Speed paths of the tiled ADC forward (issue 15): same values, same noise distribution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbarlab
from xbarlab import layers as layers_mod
from xbarlab.bench import bench_input_shape


def _conv_chip(hw: xbarlab.HardwareConfig, x: torch.Tensor, bias: bool = True) -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(8, 3, 3, padding=1, bias=bias))
    chip = xbarlab.program(xbarlab.convert(model, hw), 0)
    xbarlab.calibrate(chip, [x[:16]])
    return chip


def test_chunked_in_place_output_is_bit_identical_to_one_chunk_and_to_the_gradient_path(monkeypatch) -> None:
    hw = xbarlab.load_preset("rram").override({"adc.bits": 8, "keep_digital": []})
    x = torch.rand(40, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    chip = _conv_chip(hw, x)
    with torch.no_grad():
        whole = chip(x)
        monkeypatch.setattr(layers_mod, "MAX_PARTIAL_BYTES", 4096)  # many chunks of a few samples
        assert chip[0]._chunk_for(x) < 5
        chunked = chip(x)
    with_grad = chip(x.clone().requires_grad_(True))  # the concatenating path
    assert torch.equal(whole, chunked)
    assert torch.equal(whole, with_grad.detach())
    assert not torch.equal(whole, F.conv2d(x, chip[0].weight, chip[0].bias, padding=1))  # the ADC acts


def test_linear_chunked_in_place_output_is_bit_identical(monkeypatch) -> None:
    torch.manual_seed(4)
    lin = nn.Sequential(nn.Linear(100, 5))
    hw = xbarlab.load_preset("rram").override({"adc.bits": 6, "keep_digital": []})
    x = torch.randn(64, 100, generator=torch.Generator().manual_seed(1))
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    xbarlab.calibrate(chip, [x[:32]])
    with torch.no_grad():
        whole = chip(x)
        monkeypatch.setattr(layers_mod, "MAX_PARTIAL_BYTES", 256)
        chunked = chip(x)
    assert torch.equal(whole, chunked)
    assert torch.equal(whole, chip(x.clone().requires_grad_(True)).detach())


@pytest.mark.parametrize("kind", ["absolute_uS", "relative_to_G_on"])
def test_row_sum_path_gives_the_variance_convolution_exactly(kind: str) -> None:
    hw = xbarlab.load_preset("rram").override(
        {
            "adc.bits": 8,
            "read_noise.mode": "per_mvm",
            "read_noise.kind": kind,
            "read_noise.sigma": 0.05,
            "keep_digital": [],
        }
    )
    x = torch.rand(16, 8, 6, 6, generator=torch.Generator().manual_seed(2))
    layer = _conv_chip(hw, x)[0]
    fused = layer._fused_weights(slice_dim=3)
    assert fused is not None and fused.row_var is not None and fused.variances is None  # the row-sum path is used
    lay = layer.layout
    g, tr, s, n = lay.groups, lay.tiles_r, lay.num_slices, lay.n
    assert tr == 2  # 72 rows on 64-row tiles
    xs = x.index_select(1, layer.tile_channels) ** 2
    general = layer._compute(xs, layer.var_tiles, None, groups=g * tr)  # Σ x²σ² per column (µS-free weight units)
    general = general.view(16, g, tr, s, n, 6, 6)
    rows = layer._compute(xs, fused.row_mask, None, groups=g * tr).view(16, g, tr, 1, 1, 6, 6)
    top = 2 ** (hw.adc.bits - 1) - 1
    step2 = (layer.adc_range.view(1, 1, 1, s, 1, 1, 1) / top) ** 2
    fast = rows * fused.row_var.view(1, g, 1, s, 1, 1, 1) * step2  # back from LSB² to weight units²
    assert torch.allclose(fast.expand_as(general), general, rtol=1e-5, atol=0)


def test_row_sum_path_output_has_the_exact_per_mvm_variance() -> None:
    hw = xbarlab.load_preset("ideal").override(
        {"read_noise.kind": "absolute_uS", "read_noise.sigma": 0.5, "read_noise.mode": "per_mvm", "adc.bits": 16}
    )
    base = torch.rand(1, 8, 3, 3, generator=torch.Generator().manual_seed(5))
    x = base.expand(8000, 8, 3, 3).contiguous()
    chip = _conv_chip(hw, x, bias=False)
    layer = chip[0]
    assert layer.layout.tiles_r == 2
    with torch.no_grad():
        y = chip(x)[:, :, 1, 1]  # the centre position sees all 72 inputs, split over two tiles (two ADC reads)
    clean = F.conv2d(base, layer.weight, None, padding=1)[:, :, 1, 1]
    unit = float(layer.weight.abs().max()) / (hw.device.g_on_us - hw.device.g_off_us)
    expected = math.sqrt(float((base**2).sum()) * 2 * (0.5 * unit) ** 2)  # two devices per weight, σ = 0.5 µS
    assert torch.allclose((y - clean).std(0), torch.full((3,), expected), rtol=0.04)
    assert torch.allclose((y - clean).mean(0), torch.zeros(3), atol=5 * expected / math.sqrt(8000))


def test_bench_knows_the_vit_and_refuses_other_models_in_one_line() -> None:
    assert bench_input_shape("vit-tiny") == (1, 28, 28)
    assert bench_input_shape("resnet20") == (3, 32, 32)
    with pytest.raises(ValueError, match=r"bench --model: unknown model 'vgg'; allowed: resnet20, vit-tiny"):
        bench_input_shape("vgg")


def test_bench_waits_for_the_device_before_reading_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA a forward returns once its kernels are queued: every timed call must end with a synchronisation."""
    from xbarlab import bench, timing

    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    timing.device_synchronizer("cuda:1")()
    assert calls == [torch.device("cuda:1")]
    timing.device_synchronizer("cpu")()
    timing.device_synchronizer("meta")()
    assert calls == [torch.device("cuda:1")]  # nothing to wait for on the CPU or meta

    # the stage clock of the runner and the trials: waits for the device before each lap, accumulates repeats
    clock = timing.StageClock("cuda:0")
    clock.lap("program_s")
    clock.lap("evaluate_s")
    clock.lap("evaluate_s")
    clock.restart()
    assert calls[1:] == [torch.device("cuda:0")] * 4
    assert set(clock.timings) == {"program_s", "evaluate_s"} and all(v >= 0 for v in clock.timings.values())

    log: list[str] = []
    bench._paired_medians(lambda: log.append("digital"), lambda: log.append("analog"), 2, lambda: log.append("sync"))
    assert log == ["digital", "analog", "sync", *(["digital", "sync", "analog", "sync"] * 2)]
    log.clear()
    bench._median_time(lambda: log.append("f"), 2, sync=lambda: log.append("sync"))
    assert log == ["f", "sync", "f", "sync", "f", "sync"]

    # the whole benchmark uses the device's synchroniser for every timed region (digital, programming, pairs)
    syncs: list[str] = []
    monkeypatch.setattr(bench, "device_synchronizer", lambda device: lambda: syncs.append(str(device)))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    configs = {"static": {"preset": "rram", "dac.bits": None, "keep_digital": []}}
    _, rows = bench.run_forward_bench(model, batch=4, input_shape=(1, 8, 8), repeats=2, configs=configs)
    assert len(rows) == 1 and rows[0].ratio > 0
    digital_syncs, program_syncs, paired_syncs = 3, 2, 1 + 2 * 2
    assert syncs == ["cpu"] * (digital_syncs + program_syncs + paired_syncs)
    assert bench.peak_device_memory_mb("cpu") is None
