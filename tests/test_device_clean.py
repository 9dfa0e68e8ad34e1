"""The simulator core is device-clean: proven on PyTorch's ``meta`` device.

Like CUDA, ``meta`` refuses non-scalar CPU tensors mixed into its computations, and it refuses every host read
(``.item()``, ``bool(t)``, ``float(t)``): a forward, programming or drift step that runs on ``meta`` makes every
tensor on the layer's device and never synchronises with the host.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import xbarlab
from xbarlab.chip import calibrate, needs_calibration
from xbarlab.layers import AnalogLayer, analog_layers
from xbarlab.models import build_model

X = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
META = torch.device("meta")


def _nets() -> dict[str, tuple[nn.Module, list[str]]]:
    """A ResNet-20 (1×12×12 input) and a small conv + linear net, with their classifiers kept digital."""
    torch.manual_seed(0)
    resnet = build_model("resnet20", in_channels=1, num_classes=10).eval()
    mlp = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 24), nn.ReLU(), nn.Linear(24, 10)
    ).eval()
    return {"resnet20": (resnet, ["fc"]), "mlp": (mlp, ["5"])}


PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "direct": ("rram", {"dac.bits": None}),
    "direct-dac": ("rram", {}),
    "direct-dac-percentile": ("rram", {"dac.range_mode": "percentile", "dac.percentile": 99.0}),
    "per-mvm": ("rram", {"read_noise.mode": "per_mvm"}),
    "adc": ("rram", {"adc.bits": 6}),
    "adc-per-mvm-noise": ("rram", {"adc.bits": 6, "read_noise.mode": "per_mvm", "adc.noise_lsb": 0.5}),
    "adc-offset-slices": (
        "rram",
        {"weights.mapping": "offset", "weights.noise_granularity": "slice", "weights.bits_per_cell": 2, "adc.bits": 7},
    ),
    "pcm": ("pcm-nandakumar", {}),
    "pcm-adc-percentile": ("pcm-nandakumar", {"adc.bits": 8, "adc.range_mode": "percentile"}),
    "ir-drop": ("rram-ir", {}),
    "ir-drop-adc": ("rram-ir", {"adc.bits": 8, "adc.noise_lsb": 0.3}),
}


def _chip(net: nn.Module, keep: list[str], preset: str, override: dict[str, Any]) -> nn.Module:
    hw = xbarlab.load_preset(preset).override({**override, "keep_digital": keep})
    chip = xbarlab.program(xbarlab.convert(net, hw), 3)
    if needs_calibration(chip):
        calibrate(chip, [X, 0.5 * X], num_batches=2)
    return chip


def _all_on_meta(chip: nn.Module) -> None:
    for la in analog_layers(chip):
        for name, buf in la.named_buffers():
            assert buf.device == META, f"{la.layer_name}.{name} on {buf.device}"
        assert la.w_ni is not None and la.w_ni.stride() == la.weight.stride()


CASES = [(n, p) for n in ("resnet20", "mlp") for p in sorted(PATHS) if not (n == "resnet20" and "ir-drop" in p)]
"""Every path on both nets, except IR drop on ResNet-20 (slow to program on CPU; the small net covers it)."""


@pytest.mark.parametrize(("net_name", "path"), CASES)
def test_forward_runs_on_meta_for_every_path(net_name: str, path: str) -> None:
    net, keep = _nets()[net_name]
    preset, override = PATHS[path]
    chip = _chip(net, keep, preset, override)
    layers = analog_layers(chip)
    hw = layers[0].hw
    per_mvm = hw.read_noise.kind != "none" and hw.read_noise.mode == "per_mvm"
    assert all((la.w_tiles is not None) == (hw.adc.bits is not None) for la in layers)  # the path is the one named
    assert all((la.var_ni is not None) == per_mvm for la in layers)
    with torch.no_grad():
        expected = chip(X)
        chip.to(META)
        _all_on_meta(chip)
        y = chip(X.to(META))
        assert y.device == META and y.shape == expected.shape and y.dtype == expected.dtype
        if per_mvm or hw.adc.noise_lsb > 0:
            assert all("meta" in la._mvm_generators for la in layers)  # the noise was drawn on meta
        xbarlab.drift(chip, 3600.0)  # refresh on meta: drift, read noise, IR drop, decoding, tiles
        _all_on_meta(chip)
        y = chip(X.to(META))
        assert y.device == META and y.shape == expected.shape


PROGRAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "rram-adc-faults-noise": (
        "rram",
        {
            "adc.bits": 6,
            "read_noise.mode": "per_mvm",
            "faults.sa0_rate": 0.01,
            "faults.sa1_rate": 0.02,
            "programming.kind": "gaussian_rel",
            "programming.sigma": 0.05,
        },
    ),
    "rram-offset-slices": ("rram", {"weights.mapping": "offset", "weights.noise_granularity": "slice", "adc.bits": 6}),
    "pcm": ("pcm-nandakumar", {}),
    "ir-drop": ("rram-ir", {"adc.bits": 8}),
}


@pytest.mark.parametrize("config", sorted(PROGRAMS))
def test_programming_and_set_time_on_meta_weights_make_every_tensor_on_meta(config: str) -> None:
    net, keep = _nets()["mlp"]
    preset, override = PROGRAMS[config]
    hw = xbarlab.load_preset(preset).override({**override, "keep_digital": keep})
    on_cpu = xbarlab.program(xbarlab.convert(net, hw), 5)
    on_meta = xbarlab.convert(net, hw).to(META)
    xbarlab.program(on_meta, 5)  # no host read: w_max stays a device tensor
    _all_on_meta(on_meta)
    for a, b in zip(analog_layers(on_cpu), analog_layers(on_meta), strict=True):
        for name, buf in a.named_buffers():
            other = getattr(b, name)
            assert (other.shape, other.dtype) == (buf.shape, buf.dtype), name
        assert (b._host_seed, b._host_time_s) == (5, a._time_s())
    xbarlab.drift(on_meta, 100.0)
    _all_on_meta(on_meta)
    assert all(la._time_s() == 100.0 for la in analog_layers(on_meta))


def test_host_mirrors_follow_assigned_and_loaded_buffers() -> None:
    net, keep = _nets()["mlp"]
    hw = xbarlab.load_preset("rram").override({"keep_digital": keep})
    chip = xbarlab.program(xbarlab.convert(net, hw), 1)
    calibrate(chip, [X], num_batches=1)
    la: AnalogLayer = analog_layers(chip)[0]
    assert (la._time_s(), la._seed(), la._signed_dac()) == (1.0, 1, True)  # X is signed
    la.chip_time = torch.tensor(7.0, dtype=torch.float64)  # e.g. a chip pool loading another chip's buffers
    la.chip_seed = torch.tensor(9)
    la.dac_signed = torch.tensor(False)
    assert (la._time_s(), la._seed(), la._signed_dac()) == (7.0, 9, False)
    state = {k: v.clone() for k, v in la.state_dict().items()}
    state["chip_time"] = torch.tensor(11.0, dtype=torch.float64)
    la.load_state_dict(state)
    assert (la._time_s(), la._seed(), la._signed_dac()) == (11.0, 9, False)
    la.to(META)  # moving keeps the mirrors: nothing is read back from meta
    assert (la._time_s(), la._seed(), la._signed_dac()) == (11.0, 9, False)


def test_mitigation_forward_paths_on_meta() -> None:
    """Compensation branches and drift compensation (conductance readout) run on meta after the move.

    The default ``forward`` readout is covered by :func:`test_drift_compensation_forward_readout_runs_on_meta`.
    """
    from xbarlab.mitigation import compensation, drift_compensation

    net, keep = _nets()["mlp"]
    hw = xbarlab.load_preset("rram").override({"keep_digital": keep, "read_noise.mode": "per_mvm"})
    chip = xbarlab.program(xbarlab.convert(net, hw), 0)
    calibrate(chip, [X], num_batches=1)
    compensation.attach_compensation(chip, compensation.layer_names(chip))
    with torch.no_grad():
        y = chip.to(META)(X.to(META))
    assert y.device == META and y.shape == (2, 10)
    pcm = xbarlab.program(
        xbarlab.convert(net, xbarlab.load_preset("pcm-nandakumar").override({"keep_digital": keep})), 0
    )
    drift_compensation.record_reference(pcm, readout="conductance")
    xbarlab.drift(pcm.to(META), 3600.0)
    drift_compensation.compensate(pcm, readout="conductance")
    with torch.no_grad():
        y = pcm(X.to(META))
    assert y.device == META and y.shape == (2, 10)


@pytest.mark.parametrize("kind", ["global", "per_column"])
def test_drift_compensation_forward_readout_runs_on_meta(kind: str) -> None:
    """The default ``forward`` readout keeps read-outs and factors on the layer's device (no ``.cpu()`` copy).

    The reference is recorded on CPU, the chip is moved to meta, drifted and compensated there; the factors and the
    forward stay on meta. Fails on the old code, whose ``layer_readout`` returned ``.cpu()`` of meta values.
    """
    from xbarlab.mitigation import drift_compensation

    net, keep = _nets()["mlp"]
    pcm = xbarlab.program(
        xbarlab.convert(net, xbarlab.load_preset("pcm-nandakumar").override({"keep_digital": keep})), 0
    )
    drift_compensation.record_reference(pcm, kind=kind)
    xbarlab.drift(pcm.to(META), 3600.0)
    res = drift_compensation.compensate(pcm, kind=kind)
    assert res.scales and all(s.device == META for s in res.scales.values())
    with torch.no_grad():
        y = pcm(X.to(META))
    assert y.device == META and y.shape == (2, 10)


def test_training_loaders_are_made_for_the_training_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train`` and ``evaluate`` pass their device to ``make_loader`` (pinned memory on CUDA, none on CPU)."""
    from torch.utils.data import TensorDataset

    from xbarlab import training
    from xbarlab.data import base

    seen: list[Any] = []
    real = base.make_loader

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("device"))
        loader = real(*args, **kwargs)
        seen.append(loader.pin_memory)
        return loader

    monkeypatch.setattr(training, "make_loader", spy)
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    model = nn.Linear(4, 3)
    cfg = training.TrainConfig(epochs=1, batch_size=4, lr=0.01)
    training.train(model, data, None, cfg, progress=False)
    loss, acc = training.evaluate(model, data, "cpu", batch_size=4)
    assert seen == [torch.device("cpu"), False, torch.device("cpu"), False]
    assert 0.0 <= acc <= 1.0 and loss > 0.0


def test_save_chip_refuses_a_chip_on_meta_and_writes_nothing(tmp_path: Any) -> None:
    """A chip moved to meta holds no values: ``save_chip`` refuses it in one line before creating any file."""
    from xbarlab.chipfile import save_chip

    net, keep = _nets()["mlp"]
    chip = xbarlab.program(xbarlab.convert(net, xbarlab.load_preset("rram").override({"keep_digital": keep})), 0)
    chip.to(META)
    with pytest.raises(ValueError, match=r"^model: tensor .* is on the meta device.*allowed: a chip whose tensors"):
        save_chip(chip, tmp_path / "sub" / "chip")
    assert not (tmp_path / "sub").exists()


# ------------------------------------------------------------------------------------ P3 stages on meta


def _meta_spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Replace ``module.name`` (the one host read of a loop, at its end) by a recorder of what it was given."""
    seen: list[Any] = []

    def spy(pending: list[torch.Tensor], losses: list[float]) -> None:
        seen.extend(pending)
        losses.extend([0.0] * len(pending))
        pending.clear()

    monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize(("pooled", "loss"), [(False, "ce_normalized"), (True, "ce_normalized"), (False, "feature")])
def test_compensation_training_steps_run_on_meta(monkeypatch: pytest.MonkeyPatch, pooled: bool, loss: str) -> None:
    """Branch forward + backward + Adam steps, a fresh chip programmed per step (or a chip pool), on meta.

    The step losses stay on the device until the single read at the end (spied here: meta holds no values). Fails
    on the old code, which read ``bool(torch.isfinite(loss))`` and ``float(loss)`` every step.
    """
    import copy

    from xbarlab.mitigation import compensation

    net, keep = _nets()["mlp"]
    hw = xbarlab.load_preset("rram").override({"keep_digital": keep, "dac.bits": None})  # no converter to calibrate
    chip = xbarlab.convert(net, hw)
    compensation.attach_compensation(chip, compensation.layer_names(chip))
    chip.to(META)
    teacher = copy.deepcopy(net).to(META)
    pool = compensation.ChipPool(chip, 2, seed=1) if pooled else None
    seen = _meta_spy(monkeypatch, compensation.training, "_read_losses")  # where train_compensation looks it up
    data = [(X, torch.tensor([0, 1])), (0.5 * X, torch.tensor([2, 3]))]
    res = compensation.train_compensation(
        chip, data, steps=3, chip_pool=pool, loss=loss, teacher=teacher, device=META, lr=1e-3
    )
    assert len(seen) == 3 and all(t.device == META and t.shape == () for t in seen)
    assert res.losses == [0.0, 0.0, 0.0] and res.steps == 3
    branches = [p for c in compensation.compensated_layers(chip).values() for p in c.branch.parameters()]
    assert branches and all(p.device == META for p in branches)
    _all_on_meta(chip)


def test_compensation_loss_is_read_once_and_a_non_finite_step_is_named() -> None:
    """The deferred read still refuses a non-finite loss, naming its first step (2 here), not a later one."""
    from xbarlab.mitigation import compensation

    net, keep = _nets()["mlp"]
    hw = xbarlab.load_preset("rram").override({"keep_digital": keep, "dac.bits": None})
    chip = xbarlab.convert(net, hw)
    compensation.attach_compensation(chip, compensation.layer_names(chip))
    calls = [0]

    def loss(logits: torch.Tensor, labels: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        value = torch.nn.functional.cross_entropy(logits, labels)
        return value * float("nan") if calls[0] >= 2 else value

    with pytest.raises(FloatingPointError, match=r"^non-finite compensation loss nan at step 2; lower lr$"):
        compensation.train_compensation(chip, [(X, torch.tensor([0, 1]))], steps=4, loss=loss)
    assert calls[0] == 4


def test_lipschitz_noise_injection_and_bn_adaptation_steps_run_on_meta() -> None:
    """A Lipschitz-regularised, noise-injected SGD step with post-step clipping, then BN adaptation, on meta.

    Fails on the old code: noise injection read ``float(max|W|)`` every forward and clipping ``float(std(W))``.
    """
    from xbarlab.mitigation.bn import adapt_bn
    from xbarlab.mitigation.lipschitz import lipschitz_regularizer
    from xbarlab.mitigation.noise_injection import NoiseInjection

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(400, 10)).to(META)
    reg = lipschitz_regularizer("parseval_neft", 1e-3)
    injection = NoiseInjection(net, 0.05, 2.0).attach()
    callback = injection.callback()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = X.to(META), torch.tensor([1, 2], device=META)
    loss = nn.functional.cross_entropy(net(x), y) + reg(net)
    loss.backward()
    opt.step()
    callback.on_step_end(net, 1)
    injection.detach()
    assert injection.forward_count == 2 and loss.device == META
    assert all(p.device == META and p.grad is not None and p.grad.device == META for p in net.parameters())
    # adapt_bn with momentum=None is not meta-clean: torch's BatchNorm reads float(num_batches_tracked) per batch
    res = adapt_bn(net, [(X, y)], num_batches=1, momentum=0.1)
    assert res.num_batches == 1 and net[1].running_mean.device == META


def test_load_chip_with_device_lands_every_tensor_there(tmp_path: Any) -> None:
    """``load_chip(..., device=meta)``: params, buffers and static chip state on meta, shapes and dtypes as saved."""
    from xbarlab.chipfile import load_chip, save_chip

    net, keep = _nets()["mlp"]
    hw = xbarlab.load_preset("rram").override({"keep_digital": keep, "adc.bits": 6})
    chip = xbarlab.program(xbarlab.convert(net, hw), 4)
    calibrate(chip, [X], num_batches=1)
    save_chip(chip, tmp_path / "chip")
    loaded = load_chip(_nets()["mlp"][0], tmp_path / "chip", device=META)
    saved = chip.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(saved)
    for name, t in got.items():
        assert t.device == META and (t.shape, t.dtype) == (saved[name].shape, saved[name].dtype), name
    _all_on_meta(loaded)
    same = load_chip(_nets()["mlp"][0], tmp_path / "chip", device="cpu")
    assert all(torch.equal(same.state_dict()[k], v) for k, v in saved.items())  # static state identical


# ------------------------------------------------------------------------------------ host reads per batch


def test_mac_accumulator_sums_stay_on_meta_and_match_the_host_sums() -> None:
    """Per-batch sums stay on the device (meta runs them; the old code read ``float()`` per batch there)."""
    from xbarlab.metrics import _MacAccumulator

    acc = _MacAccumulator()
    for _ in range(3):
        acc.add(torch.randn(4, 5, device=META), torch.randn(4, 5, device=META))
    assert acc.n == 60 and acc.sums is not None and acc.sums.device == META and acc.sums.shape == (5,)
    g = torch.Generator().manual_seed(3)
    pairs = [(torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)) for _ in range(3)]
    cpu = _MacAccumulator()
    for r, m in pairs:
        cpu.add(r, m)
    stats = cpu.stats()
    r = torch.cat([p[0].reshape(-1) for p in pairs]).double()
    e = torch.cat([p[1].reshape(-1) for p in pairs]).double() - r
    assert stats.n == 63 and stats.max_abs_error == float(e.abs().max())
    assert stats.rmse == pytest.approx(float(e.pow(2).mean().sqrt()), rel=1e-12)
    assert stats.mean_error == pytest.approx(float(e.mean()), rel=1e-12)


def test_confusion_accumulator_counts_on_meta_and_refuses_out_of_range_once() -> None:
    """Confusion counts accumulate on meta; on CPU they equal the per-batch sum; a bad index is refused at the end."""
    from xbarlab.papers.p2.segmentation import ConfusionAccumulator, confusion_matrix

    acc = ConfusionAccumulator(4, META)
    acc.add(torch.randint(0, 4, (2, 3, 3), device=META), torch.randint(0, 4, (2, 3, 3)))
    assert acc.counts.device == META
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.randint(0, 4, (2, 5, 5), generator=g), torch.randint(0, 4, (2, 5, 5), generator=g)) for _ in "ab"]
    cpu = ConfusionAccumulator(4)
    for p, t in pairs:
        cpu.add(p, t)
    assert torch.equal(cpu.result(), sum(confusion_matrix(p, t, 4) for p, t in pairs))
    assert int(cpu.result().sum()) == 100
    cpu.add(torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"^pred/target: class indices must be in \[0, 4\)$"):
        cpu.result()


class _CountReads:
    """Counts host reads (``.item()``, ``float``, ``int``, ``bool``, ``.tolist()``, ``.cpu()``) of tensors."""

    NAMES = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def spy(t: torch.Tensor, *a: Any, _real: Any = real, **k: Any) -> Any:
                self.count += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, spy)


@pytest.mark.parametrize("task", ["detector", "segmenter"])
def test_p2_evaluation_reads_nothing_between_batches(monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    """``evaluate_task``: no host read between the first and the last forward; metrics as the per-batch code."""
    from xbarlab.papers.p2.canvas import generate_canvases
    from xbarlab.papers.p2.detection import TinyCenterNet, decode, mean_average_precision
    from xbarlab.papers.p2.segmentation import TinySegNet, confusion_matrix, miou
    from xbarlab.papers.p2.train_tasks import evaluate_task

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8, generator=g)
    data = generate_canvases(images, torch.randint(0, 10, (12,), generator=g), 7, seed=2)
    torch.manual_seed(0)
    model = (TinyCenterNet(10, width=8) if task == "detector" else TinySegNet(11, width=8)).eval()
    with torch.no_grad():  # the per-batch reference (the old loop)
        chunks = [data.inputs(slice(i, i + 3)) for i in range(0, 7, 3)]
        if task == "detector":
            dets = [d for x in chunks for d in decode(model(x), 10)]
            want = mean_average_precision(dets, [data.targets(i) for i in range(7)], 10)[0]
        else:
            masks = [data.masks[i : i + 3] for i in range(0, 7, 3)]
            want = miou(sum(confusion_matrix(model(x).argmax(1), m, 11) for x, m in zip(chunks, masks, strict=True)))
    from xbarlab.papers.p2 import train_tasks

    seen: list[Any] = []
    real_map = train_tasks.mean_average_precision
    monkeypatch.setattr(train_tasks, "mean_average_precision", lambda d, *a: seen.append(d) or real_map(d, *a))
    reads = _CountReads(monkeypatch)
    at_forward: list[int] = []
    model.register_forward_pre_hook(lambda *_: at_forward.append(reads.count))
    got = evaluate_task(task, model, data, batch_size=3)
    monkeypatch.undo()
    assert len(at_forward) == 3 and at_forward[0] == at_forward[-1], at_forward
    assert got == want
    if task == "detector":  # the detections themselves, box by box (a random net's mAP is 0)
        assert len(seen[0]) == 7 and sum(d.scores.numel() for d in seen[0]) > 0
        for a, b in zip(seen[0], dets, strict=True):
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)


def test_adapt_bn_cumulative_average_runs_on_meta_and_is_bit_identical_on_cpu() -> None:
    """``momentum=None``: no per-batch ``float(num_batches_tracked)`` (meta runs it); CPU statistics as torch's own.

    The second BN is called twice per forward: the per-module count keeps the exact cumulative average.
    """
    import copy

    from xbarlab.mitigation.bn import adapt_bn

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.bn2 = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.bn2(self.bn(self.conv(x))))

    torch.manual_seed(0)
    net = Twice()
    data = [torch.randn(3, 1, 6, 6) * (i + 1) for i in range(4)]
    ref = copy.deepcopy(net).train()
    for bn in (ref.bn, ref.bn2):
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        for x in data:
            ref(x)
    adapt_bn(net, data, num_batches=4)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in ref.state_dict().items())
    assert int(net.bn2.num_batches_tracked) == 8 and net.bn.momentum == 0.1  # momentum restored
    meta = Twice().to(META)
    res = adapt_bn(meta, [X.to(META)[:, :, :6, :6]] * 2, num_batches=2)
    assert res.num_batches == 2 and meta.bn.running_mean.device == META and meta.bn.momentum == 0.1


def test_ray_trial_resources_request_a_gpu_only_for_cuda_trials() -> None:
    """Ray: one CPU per trial; one GPU when the trial device is CUDA, none on the CPU (no Ray started)."""
    from xbarlab.experiments.executors import trial_resources

    assert trial_resources({"device": "cuda"}) == {"num_cpus": 1, "num_gpus": 1}
    assert trial_resources({"device": "cuda:1"}) == {"num_cpus": 1, "num_gpus": 1}
    assert trial_resources({"device": "cpu"}) == {"num_cpus": 1, "num_gpus": 0}
    assert trial_resources({}) == {"num_cpus": 1, "num_gpus": 0}


def test_p2_training_reads_the_step_losses_once_per_epoch_and_names_a_non_finite_step() -> None:
    """``train_task``'s epoch loss: the same float sum as the per-step read; the first non-finite step is named."""
    from xbarlab.papers.p2.train_tasks import _epoch_loss

    losses = [torch.tensor(v) for v in (0.5, 0.25, 0.125)]
    want = float(losses[0]) * 4 + float(losses[1]) * 4 + float(losses[2]) * 2
    assert _epoch_loss(losses, [4, 4, 2], 0, 0) == (want, 10)
    bad = [torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))]
    with pytest.raises(FloatingPointError, match=r"^non-finite loss at epoch 3, step 12; lower the lr$"):
        _epoch_loss(bad, [4, 4, 4], 2, 10)


def test_make_loader_pins_memory_only_for_a_cuda_device() -> None:
    """Pinned host memory for CUDA batches (the loops copy them ``non_blocking``); none for CPU or no device."""
    from torch.utils.data import TensorDataset

    from xbarlab.data import make_loader

    data = TensorDataset(torch.randn(4, 2), torch.zeros(4))
    pins = [make_loader(data, 2, device=d).pin_memory for d in ("cuda", "cuda:1", torch.device("cuda"), "cpu", None)]
    assert pins == [True, True, True, False, False]  # built only, never iterated: no GPU needed
