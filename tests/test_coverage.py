"""The coverage guarantee: every layer the conversion report calls analog runs on the chip."""

from __future__ import annotations

import copy
import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbarlab
from xbarlab.chip import calibrate, program
from xbarlab.conversion import ConversionError, analog_fast_path_guard, convert
from xbarlab.coverage import CoverageError, is_verified, verify_coverage
from xbarlab.layer_types import AnalogLinear


def _ideal(**changes: object) -> xbarlab.HardwareConfig:
    return dataclasses.replace(xbarlab.load_preset("ideal"), **changes)  # type: ignore[arg-type]


class TinyTransformer(nn.Module):
    """One batch-first encoder layer (d=16, 2 heads) and a linear head on the mean token."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x).mean(1))


X_SEQ = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))


def _calls(chip: nn.Module) -> dict[str, int]:
    return {m.layer_name: m.forward_calls for m in chip.modules() if isinstance(m, AnalogLinear)}


def _run_counts(chip: nn.Module, x: torch.Tensor, *, train: bool = False, grad: bool = False) -> dict[str, int]:
    before = _calls(chip)
    chip.train(train)
    with torch.set_grad_enabled(grad):
        chip(x)
    return {k: v - before[k] for k, v in _calls(chip).items()}


def test_transformer_ffn_runs_analog_in_eval_no_grad_and_equals_digital() -> None:
    model = TinyTransformer().eval()
    chip = program(convert(model, _ideal()), 0).eval()
    report = {r.name: r for r in chip.xbarlab_report.layers}
    assert report["enc.linear1"].analog and report["enc.linear2"].analog and report["head"].analog
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert report[f"enc.self_attn.{proj}"].analog and report[f"enc.self_attn.{proj}"].weight_shape == (16, 16)
    assert "enc.self_attn" not in report
    with torch.no_grad():
        y = chip(X_SEQ)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            ref = model(X_SEQ)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.allclose(y, ref, atol=1e-5), float((y - ref).abs().max())
    # every FFN linear ran once per forward in eval+no_grad, eval+grad and training
    expected = {f"enc.self_attn.{p}": 1 for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    expected |= {"enc.linear1": 1, "enc.linear2": 1, "head": 1}
    assert _run_counts(chip, X_SEQ) == expected
    assert _run_counts(chip, X_SEQ, grad=True) == expected
    assert _run_counts(chip, X_SEQ, train=True, grad=True) == expected


def test_transformer_fast_path_guard_survives_copy_pickle_state_dict_and_to() -> None:
    model = TinyTransformer().eval()
    chip = program(convert(model, _ideal()), 0)
    expected = {f"enc.self_attn.{p}": 1 for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    expected |= {"enc.linear1": 1, "enc.linear2": 1, "head": 1}
    assert _run_counts(copy.deepcopy(chip), X_SEQ) == expected
    buf = io.BytesIO()
    torch.save(chip, buf)
    buf.seek(0)
    assert _run_counts(torch.load(buf, weights_only=False), X_SEQ) == expected
    fresh = program(convert(model, _ideal()), 1)
    fresh.load_state_dict(chip.state_dict())
    assert _run_counts(fresh.to("cpu"), X_SEQ) == expected


def test_fused_fast_path_stays_off_without_guard_once_attention_is_split() -> None:
    """Even without the guard the fused encoder kernel is never taken: the split attention has no in_proj_bias
    (PyTorch's fast-path check reads it), so every projection and FFN layer still runs on the chip."""
    chip = program(convert(TinyTransformer(), _ideal()), 0)
    enc = chip.get_submodule("enc")
    assert analog_fast_path_guard in enc._forward_pre_hooks.values()
    enc._forward_pre_hooks.clear()
    counts = _run_counts(chip, X_SEQ)  # the fast path is not taken: the split attention has no in_proj_bias
    assert counts["enc.linear1"] == 1 and counts["enc.self_attn.q_proj"] == 1
    calibrate(chip, [X_SEQ], num_batches=1)
    assert is_verified(chip)


def test_transformer_encoder_nested_tensor_path_disabled() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    chip = program(convert(model, _ideal()), 0).eval()
    assert chip.use_nested_tensor is False
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, 4] = True
    with torch.no_grad():
        chip(X_SEQ, src_key_padding_mask=mask)
    assert all(n == 1 for n in _calls(chip).values()) and len(_calls(chip)) == 12
    calibrate(chip, [X_SEQ], num_batches=1)
    assert is_verified(chip)


class FunctionalHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.relu(self.fc1(x)), self.fc2.weight, self.fc2.bias)


class MatmulHead(FunctionalHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(x) @ self.fc2.weight.t()


X8 = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(("model", "op"), [(FunctionalHead(), "linear"), (MatmulHead(), "matmul")])
def test_functional_use_of_a_converted_weight_is_refused(model: nn.Module, op: str) -> None:
    chip = program(convert(model, _ideal()), 0)
    with pytest.raises(CoverageError, match=rf"layer 'fc2': its ideal weight is used by (__)?{op}(__)?\(\)"):
        calibrate(chip, [X8], num_batches=2)
    assert not is_verified(chip)


class UnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.aux = nn.Linear(8, 3)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_unused_layer_refused_at_calibrate_also_without_converters() -> None:
    hw = _ideal()
    assert hw.dac.bits is None and hw.adc.bits is None
    chip = program(convert(UnusedHead(), hw), 0)
    with pytest.raises(CoverageError, match=r"layer 'aux': converted to analog but did not run in any of 2"):
        calibrate(chip, [X8, X8], num_batches=2)
    with pytest.raises(CoverageError, match=r"layer 'aux'"):
        verify_coverage(chip.eval(), X8)


def test_calibrate_without_converters_verifies_and_reads_a_one_shot_loader_once() -> None:
    chip = program(convert(FunctionalHead().fc1, _ideal()), 0)
    calibrate(chip, iter([X8, X8]), num_batches=4)
    assert is_verified(chip) and chip.forward_calls == 3  # 2 batches + 1 guarded pass


class BufferWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.register_buffer("proj", torch.randn(4, 8))
        self.plain = torch.randn(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(self.fc(x), self.proj), self.plain)


def test_weight_in_buffer_or_plain_attribute_is_listed_digital() -> None:
    chip = convert(BufferWeights(), _ideal())
    (rec,) = [r for r in chip.xbarlab_report.layers if r.name == "(model)"]
    assert not rec.analog and rec.weight_shape == (4, 8)
    assert "proj (4, 8)" in rec.reason and "plain (3, 4)" in rec.reason
    bn = convert(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), _ideal())
    assert [r.name for r in bn.xbarlab_report.layers] == ["0"]  # running statistics are not weights


class HeadRegisteredFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.body = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _digital_names(chip: nn.Module) -> list[str]:
    return [r.name for r in chip.xbarlab_report.layers if not r.analog]


def test_classifier_token_picks_the_executed_output_layer() -> None:
    hw = _ideal(keep_digital=("@classifier",))
    # the first registered layer is the head (in_features 16), so the meta-device guess fails: example_input
    with pytest.raises(ConversionError, match="example_input"):
        convert(HeadRegisteredFirst(), hw)
    chip = convert(HeadRegisteredFirst(), hw, example_input=torch.randn(2, 8))
    assert _digital_names(chip) == ["head"]
    # a transformer: the head, not the last registered FFN linear, is the classifier (meta-device trace)
    tr = convert(TinyTransformer(), hw)
    assert _digital_names(tr) == ["head"]
    assert {r.name for r in tr.xbarlab_report.analog} == {
        "enc.linear1",
        "enc.linear2",
        *(f"enc.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    }


def test_classifier_token_with_a_conv_net_traced_on_meta() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    chip = convert(net, _ideal(keep_digital=("@classifier",)))
    assert _digital_names(chip) == ["4"]


def test_accuracy_verifies_an_unverified_chip_on_its_first_batch() -> None:
    from xbarlab.evaluation import accuracy

    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(CoverageError, match=r"layer 'aux'"):
        accuracy(program(convert(UnusedHead(), _ideal()), 0), [(X8, y)])
    with pytest.raises(CoverageError, match=r"layer 'fc2'.*linear"):
        accuracy(program(convert(FunctionalHead(), _ideal()), 0), [(X8, y)])
    net = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([9.0, 0.0, 0.0, 0.0]))  # class 0 always wins
    chip = program(convert(net, _ideal()), 0)
    assert accuracy(chip, [(X8, y), (X8, y)]) == 100.0
    assert is_verified(chip) and chip[0].forward_calls == 3  # 2 batches + 1 guarded pass


def test_coverage_checks_leave_the_per_mvm_noise_stream_untouched() -> None:
    """The guarded verification forward restores the per-MVM generators: after ``calibrate`` and after
    ``verify_coverage`` a chip draws exactly the noise it would draw had the check not run."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    hw = xbarlab.load_preset("ideal").override(
        {"read_noise.kind": "absolute_uS", "read_noise.sigma": 0.5, "read_noise.mode": "per_mvm", "dac.bits": 8}
    )
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(4))

    def fresh() -> nn.Module:
        return program(convert(model, hw), 11).eval()

    with torch.no_grad():
        plain = fresh()
        for la in plain.modules():
            if isinstance(la, AnalogLinear):
                la.start_calibration("dac")
        plain(x)  # the DAC pass calibrate() makes, without the guarded forward
        for la in plain.modules():
            if isinstance(la, AnalogLinear):
                la.finish_calibration()
        expected = [plain(x), plain(x)]
        checked = calibrate(fresh(), [x], num_batches=1)
        first = verify_coverage(checked, x)
        second = checked(x)
    assert not torch.equal(expected[0], expected[1])  # the noise is per MVM: each forward draws anew
    assert torch.equal(first, expected[0]) and torch.equal(second, expected[1])
