"""Digital compensation branches (P3 error compensation): attach/detach, overhead, training, known-error removal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xbarlab
from xbarlab.layers import AnalogLayer, analog_layers
from xbarlab.mitigation.compensation import (
    ChipPool,
    CompensatedLayer,
    CompensationConfig,
    FeatureMatchingLoss,
    NormalizedCrossEntropy,
    attach_compensation,
    compensated_layers,
    compensation_overhead,
    compensation_state,
    count_macs,
    detach_compensation,
    distillation_loss,
    load_compensation_state,
    train_compensation,
)

pytestmark = pytest.mark.usefixtures("single_thread")


IDEAL = xbarlab.load_preset("ideal")
VARIED = xbarlab.HardwareConfig.from_dict(
    {
        "name": "lognormal",
        "weights": {"bits": 8, "bits_per_cell": 2, "noise_granularity": "slice"},
        "programming": {"kind": "lognormal", "sigma": 0.3},
    }
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _data(n: int = 64, batches: int = 4, shape: tuple[int, ...] = (3, 8, 8), seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=g), torch.randint(0, 5, (n,), generator=g)) for _ in range(batches)]


def test_attach_is_identity_until_trained_and_detach_restores() -> None:
    chip = xbarlab.convert(_net(), VARIED)
    xbarlab.program(chip, 3)
    x = _data()[0][0]
    with torch.no_grad():
        before = chip(x)
    comps = attach_compensation(chip, ["conv", "fc"])
    assert set(comps) == {"conv", "fc"}
    assert isinstance(chip.conv, CompensatedLayer) and isinstance(chip.conv.layer, AnalogLayer)
    assert chip.conv.padding == (1, 1)  # attributes of the wrapped layer stay reachable
    with torch.no_grad():
        torch.testing.assert_close(chip(x), before, rtol=0, atol=0)
    # chip sampling is unchanged by the wrapper (same layer names, same streams)
    xbarlab.program(chip, 3)
    with torch.no_grad():
        torch.testing.assert_close(chip(x), before, rtol=0, atol=0)
    assert detach_compensation(chip, ["fc"]) == ["fc"]
    assert set(compensated_layers(chip)) == {"conv"}
    detach_compensation(chip)
    assert not compensated_layers(chip) and isinstance(chip.conv, AnalogLayer)
    with pytest.raises(KeyError, match="analog layers"):
        attach_compensation(chip, ["nope"])
    with pytest.raises(KeyError, match="not compensated"):
        detach_compensation(chip, ["conv"])


def test_overhead_hand_computed() -> None:
    chip = xbarlab.convert(_net(), IDEAL)
    xbarlab.program(chip, 0)
    attach_compensation(chip, ["conv", "fc"], CompensationConfig(reduction=4))
    x = torch.zeros(2, 3, 8, 8)
    report = compensation_overhead(chip, x)
    # conv branch: C = 8, hidden 2: down 8·2 + 2, up 2·8 + 8, affine 2·8 = 58 parameters;
    # MACs per position 2·8·2 + 8 = 40, at 8·8 positions = 2560
    # fc branch: C = 5, hidden 1: down 5 + 1, up 5 + 5, affine 10 = 26 parameters; MACs 2·5·1 + 5 = 15
    assert report.per_layer == {"conv": {"params": 58, "macs": 2560}, "fc": {"params": 26, "macs": 15}}
    base_params = (3 * 8 * 9 + 8) + (512 * 5 + 5)
    base_macs = 8 * 64 * 27 + 512 * 5
    assert report.base_params == base_params
    assert report.base_macs == base_macs
    assert report.params_pct == pytest.approx(100 * 84 / base_params)
    assert report.macs_pct == pytest.approx(100 * 2575 / base_macs)
    macs = count_macs(chip, x)
    assert macs["conv.layer"] == 8 * 64 * 27 and macs["conv.branch.affine"] == 8 * 64


def _scale_channels(layer: AnalogLayer, gain: torch.Tensor) -> None:
    assert layer.w_ni is not None
    layer.w_ni = layer.w_ni * gain.view(-1, *([1] * (layer.w_ni.dim() - 1)))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_compensation_removes_known_per_channel_error(kind: str) -> None:
    """A chip whose output channels carry a known gain error: the trained branch restores the ideal output."""
    torch.manual_seed(1)
    if kind == "conv":
        model: nn.Module = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1)).eval()
        shape: tuple[int, ...] = (3, 5, 5)
    else:
        model = nn.Sequential(nn.Linear(12, 6)).eval()
        shape = (12,)
    chip = xbarlab.convert(model, IDEAL)
    xbarlab.program(chip, 0)
    layer = analog_layers(chip)[0]
    gain = torch.tensor([1.3, 0.7, 1.1, 0.9, 1.5, 0.6])
    _scale_channels(layer, gain)
    data = _data(32, 8, shape)
    x = data[0][0]
    with torch.no_grad():
        error_before = (chip(x) - model(x)).pow(2).mean()
    attach_compensation(chip, [layer.layer_name])
    result = train_compensation(chip, data, steps=300, lr=0.03, resample=False, loss=distillation_loss(model), seed=0)
    with torch.no_grad():
        error_after = (chip(x) - model(x)).pow(2).mean()
    assert float(error_before) > 0.01
    assert float(error_after) < 1e-3 * float(error_before)
    assert result.losses[-1] < 1e-3 * result.losses[0]
    branch = compensated_layers(chip)[layer.layer_name].branch
    assert branch.scale is not None
    # the affine term learned (nearly) the exact inverse gain 1/g − 1
    torch.testing.assert_close(branch.scale.detach() + 1.0, 1.0 / gain, atol=0.05, rtol=0.0)


def test_training_freezes_analog_weights_resamples_and_is_reproducible() -> None:
    net = _net()
    data = _data()

    def run(seed: int) -> tuple[dict[str, torch.Tensor], list[float], nn.Module]:
        chip = xbarlab.convert(net, VARIED)
        attach_compensation(chip, ["conv"])
        weights = {n: p.detach().clone() for n, p in chip.named_parameters() if ".branch." not in n}
        res = train_compensation(chip, data, steps=6, lr=1e-2, seed=seed, teacher=net)
        for n, p in chip.named_parameters():
            if ".branch." not in n:
                torch.testing.assert_close(p.detach(), weights[n], rtol=0, atol=0)
        return compensation_state(chip), res.losses, chip

    s1, l1, chip = run(0)
    s2, l2, _ = run(0)
    s3, _, _ = run(1)
    assert l1 == l2
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=0, atol=0)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)
    # state round trip into a fresh chip
    other = xbarlab.convert(net, VARIED)
    attach_compensation(other, ["conv"])
    load_compensation_state(other, s1)
    for k, v in compensation_state(other).items():
        torch.testing.assert_close(v, s1[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in compensated_layers(chip)["conv"].branch.parameters())


def test_feature_loss_and_chip_pool() -> None:
    net = _net()
    chip = xbarlab.convert(net, VARIED)
    xbarlab.program(chip, 0)
    pool = ChipPool(copy.deepcopy(chip), size=3, seed=5)
    # a pool chip equals the chip programmed with the same seed
    ref = copy.deepcopy(chip)
    xbarlab.program(ref, pool.seeds[1])
    pool.load(chip, 1)
    x = _data()[0][0]
    with torch.no_grad():
        torch.testing.assert_close(chip(x), ref(x), rtol=0, atol=0)
    attach_compensation(chip, ["conv", "fc"])
    loss = FeatureMatchingLoss(chip, net, ce_weight=0.5)
    logits = chip(x)
    value = loss(logits, _data()[0][1], x)
    assert float(value.detach()) > 0
    loss.close()
    res = train_compensation(chip, _data(), steps=4, lr=1e-3, chip_pool=pool, loss="feature", teacher=net)
    assert len(res.losses) == 4 and res.settings["chip_pool"] == {"size": 3, "seed": 5}
    with pytest.raises(ValueError, match="teacher"):
        train_compensation(chip, _data(), steps=1, loss="kd")
    with pytest.raises(ValueError, match="teacher"):
        train_compensation(chip, _data(), steps=1)  # default ce_normalized needs τ from the digital model
    with pytest.raises(ValueError, match="steps"):
        train_compensation(chip, _data(), steps=0)
    bare = xbarlab.convert(net, VARIED)
    with pytest.raises(ValueError, match="no compensation branch"):
        train_compensation(bare, _data(), steps=1)


def test_normalized_cross_entropy_is_scale_free() -> None:
    net = _net()
    x, y = _data()[0]
    loss = NormalizedCrossEntropy(net)
    z = torch.randn(x.shape[0], 5, generator=torch.Generator().manual_seed(0))
    first = loss(z, y, x)
    with torch.no_grad():
        tau = float(net(x).norm(dim=1).mean())
    assert loss.tau == pytest.approx(tau)
    assert float(loss(7.5 * z, y, x)) == pytest.approx(float(first), rel=1e-5)
    fixed = NormalizedCrossEntropy(tau=2.0)
    assert float(fixed(z, y, x)) != pytest.approx(float(first))
    with pytest.raises(ValueError, match="teacher"):
        NormalizedCrossEntropy()
