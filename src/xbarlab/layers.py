"""Analog layers: the base class of convolutions and linear layers computed on simulated crossbar tiles.

:class:`AnalogLayer` holds the chip state and every forward path; its converters (DAC/ADC calibration and
conversion) are :class:`~xbarlab.layer_converters.ConverterMixin`, and :mod:`xbarlab.layer_types` defines its two
shapes, :class:`~xbarlab.layer_types.AnalogLinear` and :class:`~xbarlab.layer_types.AnalogConv`.

A layer keeps the original (ideal) weights and, once a chip instance is programmed, the device state of every
physical array as tensors: as-programmed conductances, drift exponents and frozen read-noise draws, of shape
(groups, slices, polarities, row_tiles, col_tiles, rows, cols). Static non-idealities are folded into effective
weights when the chip is programmed or moved in time, never in the forward pass.

Forward paths:

* **direct** (no ADC): one convolution / matmul with the effective weights W_NI. Per-MVM read noise is simulated
  exactly in distribution: the output of a column is Σ_i x_i·G_ij with independent Gaussian G_ij, so it is Gaussian
  with variance Σ_i x_i²·σ_ij², computed by a second convolution with squared inputs.
* **tiled** (ADC on): the unfolded input is split into row tiles; one batched matmul gives every partial sum of
  every (row tile, slice, column); the ADC quantises each partial sum (per-slice calibrated range, optional noise in
  LSB); slices are combined by shift-and-add and tiles accumulated digitally. The batch is chunked so the partial
  sums of one chunk never exceed :data:`MAX_PARTIAL_BYTES`; the converter arithmetic runs in place on each chunk.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbarlab import devices
from xbarlab.circuits import effective_conductance
from xbarlab.converters import RangeObserver, straight_through
from xbarlab.hardware import HardwareConfig
from xbarlab.layer_converters import ConverterMixin, NotProgrammedError
from xbarlab.mapping import (
    TileLayout,
    decode_variance,
    decode_weights,
    digits_to_conductance_us,
    make_layout,
    matrix_to_weight,
    target_digits,
    weight_to_matrix,
)
from xbarlab.sampling import standard_normal
from xbarlab.seeding import generator

MAX_PARTIAL_BYTES = 8 * 2**20
"""Upper bound (bytes) on the per-tile partial sums materialised at once in the tiled forward path.

Small on purpose: chunks of a few MiB stay in the CPU caches and reuse the allocator's memory, while chunks of
hundreds of MiB are fresh ``mmap`` pages on every call (page faults dominated the time: ResNet-20 with ADC and
per-MVM noise ran 2.4× faster with 8–16 MiB chunks than with 256 MiB, see docs/simulator.md, "Speed")."""

CHIP_BUFFERS = ("g_prog", "nu", "read_xi", "fault_code", "w_max", "chip_seed", "chip_time")
DERIVED_BUFFERS = ("w_ni", "var_ni", "w_tiles", "var_tiles", "tile_channels")
CONVERTER_BUFFERS = ("dac_range", "dac_signed", "adc_range")
HOST_MIRRORS = {"chip_time": "_host_time_s", "chip_seed": "_host_seed", "dac_signed": "_host_dac_signed"}
"""Scalar buffers the hot path needs as Python values → the attribute caching that value (None: read it from the
buffer once, when next needed). Assigning the buffer (``setattr``, ``load_state_dict``) clears the cache; moving
the layer (``.to``) keeps it, so a chip moved to CUDA or ``meta`` never reads these values back on the host."""


class AnalogLayer(ConverterMixin, nn.Module):
    """Base class of analog layers. See the module docstring and docs/architecture.md for the contract."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    # chip state, derived weights and converter calibration (None until programmed / calibrated)
    g_prog: torch.Tensor | None
    nu: torch.Tensor | None
    read_xi: torch.Tensor | None
    fault_code: torch.Tensor | None
    w_max: torch.Tensor | None
    chip_seed: torch.Tensor | None
    chip_time: torch.Tensor | None
    w_ni: torch.Tensor | None
    var_ni: torch.Tensor | None
    w_tiles: torch.Tensor | None
    var_tiles: torch.Tensor | None
    tile_channels: torch.Tensor | None
    dac_range: torch.Tensor | None
    dac_signed: torch.Tensor | None
    adc_range: torch.Tensor | None

    def __init__(self, source: nn.Module, layer_name: str, hw: HardwareConfig, *, groups: int) -> None:
        super().__init__()
        weight = source.weight
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"layer '{layer_name}': weight is not a tensor")
        self.layer_name = layer_name
        self.hw = hw
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        bias = getattr(source, "bias", None)
        if isinstance(bias, torch.Tensor):
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        else:
            self.bias = None
        self.groups = groups
        c_out = weight.shape[0]
        k = int(weight[0].numel())
        self.layout: TileLayout = make_layout(hw, groups=groups, k=k, n=c_out // groups)
        for name in (*CHIP_BUFFERS, *DERIVED_BUFFERS, *CONVERTER_BUFFERS):
            self.register_buffer(name, None)
        self._observers: dict[str, RangeObserver] | None = None
        self._calibration_stage: str | None = None
        self._calib_batch = -1
        self._mvm_generators: dict[str, torch.Generator] = {}
        self.forward_calls = 0
        """Calls of :meth:`forward` (a plain int, no host sync): the chip's coverage check counts them."""
        self._host_time_s: float | None = None
        self._host_seed: int | None = None
        self._host_dac_signed: bool | None = None

    # ------------------------------------------------------------------------------------------------ host mirrors
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        mirror = HOST_MIRRORS.get(name)
        if mirror is not None:
            self.__dict__[mirror] = None  # the buffer changed: re-read it when next needed

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[no-untyped-call]
        for mirror in HOST_MIRRORS.values():
            self.__dict__[mirror] = None

    def _sync_host_mirrors(self) -> None:
        """Read the scalar buffers (chip time, seed, DAC sign) into their Python mirrors now (one host read each).

        Called by :func:`xbarlab.chipfile.load_chip` after it sets the buffers; without the call the mirrors are read
        lazily, on first use.
        """
        self._host_time_s = None if self.chip_time is None else float(self.chip_time)
        self._host_seed = None if self.chip_seed is None else int(self.chip_seed)
        self._host_dac_signed = None if self.dac_signed is None else bool(self.dac_signed)

    def _time_s(self) -> float:
        """Chip time (s) as a Python float (the buffer is read at most once after it was set)."""
        if self._host_time_s is None:
            assert self.chip_time is not None
            self._host_time_s = float(self.chip_time)
        return self._host_time_s

    def _seed(self) -> int:
        """Chip seed as a Python int (0 before programming)."""
        if self._host_seed is None:
            self._host_seed = int(self.chip_seed) if self.chip_seed is not None else 0
        return self._host_seed

    def _signed_dac(self) -> bool:
        """DAC sign (a signed range [−r, r]) as a Python bool."""
        if self._host_dac_signed is None:
            assert self.dac_signed is not None
            self._host_dac_signed = bool(self.dac_signed)
        return self._host_dac_signed

    # ------------------------------------------------------------------------------------------------ state
    @property
    def is_programmed(self) -> bool:
        return self.w_ni is not None

    @property
    def needs_calibration(self) -> bool:
        """True when a converter is enabled and its range is not calibrated yet."""
        return (self.hw.dac.bits is not None and self.dac_range is None) or (
            self.hw.adc.bits is not None and self.adc_range is None
        )

    def effective_weight(self) -> torch.Tensor:
        """W_NI: the weights the programmed chip computes with (static non-idealities), same shape as ``weight``."""
        self._require_programmed()
        assert self.w_ni is not None
        return self.w_ni

    def _require_programmed(self) -> None:
        if self.w_ni is None:
            raise NotProgrammedError(
                f"analog layer '{self.layer_name}' is not programmed: call xbarlab.program(model, seed) first"
            )

    # ------------------------------------------------------------------------------------------------ programming
    @torch.no_grad()
    def program(self, seed: int) -> None:
        """Sample one chip instance: programming variation, faults, drift exponents and frozen read noise.

        Computed on the weights' device; the random draws are made on the CPU from the derived seeds (the same
        chip on every device) and moved there. No value is read on the host: w_max = max|W| stays a device tensor.
        """
        hw, lay = self.hw, self.layout
        dev = hw.device
        target = self.weight.device
        w2d = weight_to_matrix(self.weight.detach().to(torch.float64), self.groups)
        w_max = w2d.abs().max() if w2d.numel() else torch.zeros((), dtype=torch.float64, device=target)
        digits = target_digits(w2d, w_max, lay)
        g_target = digits_to_conductance_us(digits, lay, dev.g_on_us, dev.g_off_us)
        g = devices.apply_programming(g_target, hw.programming, dev, generator(seed, self.layer_name, "programming"))
        g, code = devices.apply_stuck_at_faults(g, hw.faults, dev, generator(seed, self.layer_name, "faults"))
        self.g_prog = g
        self.fault_code = code
        self.nu = None
        if hw.drift.kind != "none":
            self.nu = devices.sample_drift_exponents(g_target, hw.drift, dev, generator(seed, self.layer_name, "drift"))
        self.read_xi = None
        if hw.read_noise.kind != "none" and hw.read_noise.mode == "frozen":
            self.read_xi = devices.randn(g.shape, generator(seed, self.layer_name, "read"), target)
        self.w_max = w_max.clone()
        t0 = devices.initial_time_s(hw.drift)
        self.chip_seed = torch.tensor(seed, dtype=torch.int64, device=target)
        self.chip_time = torch.tensor(t0, dtype=torch.float64, device=target)
        self.dac_range = None
        self.dac_signed = None
        self.adc_range = None
        self._host_seed, self._host_time_s = int(seed), float(t0)
        self._mvm_generators = {}
        self.refresh()

    @torch.no_grad()
    def set_time(self, t_seconds: float) -> None:
        """Move the chip to time ``t_seconds`` (s) and recompute the effective weights."""
        self._require_programmed()
        devices.check_time(self.hw.drift, t_seconds)
        self.chip_time = torch.tensor(float(t_seconds), dtype=torch.float64, device=self.weight.device)
        self._host_time_s = float(t_seconds)
        self.refresh()

    def read_conductances_us(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(conductances read at the current chip time, read-noise σ) in µS, before parasitics."""
        assert self.g_prog is not None and self.chip_time is not None
        hw = self.hw
        t = self._time_s()
        g_read = self.g_prog
        if self.nu is not None:
            g_read = g_read * devices.drift_factor(self.nu, hw.drift, t)
        sigma = devices.read_noise_sigma_us(self.g_prog, g_read, hw.read_noise, hw.device, hw.drift, t)
        if self.read_xi is not None:
            g_read = (g_read + sigma * self.read_xi).clamp_min(0.0)
        return g_read, sigma

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute effective weights (and per-MVM variances) from the device state at the current chip time."""
        hw, lay = self.hw, self.layout
        g_on, g_off = hw.device.g_on_us, hw.device.g_off_us
        g_read, sigma = self.read_conductances_us()
        if hw.parasitics.enabled:
            g_read = self._apply_parasitics(g_read)
        assert self.w_max is not None
        w_max = self.w_max  # a device tensor: decoding reads no value on the host
        slices = decode_weights(g_read, lay, w_max, g_on, g_off)  # (G, S, K, N) float64
        dtype = self.weight.dtype
        self.w_ni = self._like_weight(matrix_to_weight(slices.sum(1), self.weight.shape))
        per_mvm = hw.read_noise.kind != "none" and hw.read_noise.mode == "per_mvm"
        var = decode_variance(sigma**2, lay, w_max, g_on, g_off) if per_mvm else None
        self.var_ni = self._like_weight(matrix_to_weight(var.sum(1), self.weight.shape)) if var is not None else None
        if not self._all_finite(self.w_ni) or (self.var_ni is not None and not self._all_finite(self.var_ni)):
            raise ValueError(
                f"analog layer '{self.layer_name}': the chip's effective weights are not finite at t = "
                f"{self._time_s():g} s (conductances overflow float "
                f"range; programming.sigma = {hw.programming.sigma:g}, kind {hw.programming.kind!r}): reduce the "
                "variation"
            )
        if hw.adc.bits is not None:
            self.w_tiles = self._to_tiles(slices).to(dtype)
            self.var_tiles = self._to_tiles(var).to(dtype) if var is not None else None
        else:
            self.w_tiles = None
            self.var_tiles = None

    def _like_weight(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (shape of ``weight``) in the weight's dtype with the weight's EXACT strides.

        Not merely its memory format: a 16×1×3×3 stem weight is "contiguous" in both formats, and re-laying it
        out makes oneDNN pick another kernel, so ``--hw ideal`` would not be bit-exact. ``weight`` is a clone of
        the source weight, hence non-overlapping and dense, so its strides are a valid layout for a new tensor.
        """
        w = self.weight
        out = torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device=values.device)
        return out.copy_(values)

    @staticmethod
    def _all_finite(t: torch.Tensor) -> bool:
        """True when every element is finite (one host read; ``meta`` tensors carry no values and pass)."""
        return t.device.type == "meta" or bool(torch.isfinite(t).all())

    def _to_tiles(self, per_slice: torch.Tensor) -> torch.Tensor:
        """(G, S, K, N) per-slice weights → (G·Tr, rows, S·N) row-tile matrices for a batched matmul."""
        lay = self.layout
        padded = F.pad(per_slice, (0, 0, 0, lay.k_pad - lay.k))
        tiles = padded.reshape(lay.groups, lay.num_slices, lay.tiles_r, lay.rows, lay.n)
        return tiles.permute(0, 2, 3, 1, 4).reshape(lay.groups * lay.tiles_r, lay.rows, -1).contiguous()

    def _apply_parasitics(self, g_us: torch.Tensor) -> torch.Tensor:
        p = self.hw.parasitics
        lay = self.layout
        arrays = g_us.reshape(-1, lay.rows, lay.cols) * 1e-6
        g_eff = effective_conductance(
            arrays,
            r_driver=p.r_driver_ohm,
            r_wire_row=p.r_wire_row_ohm,
            r_wire_col=p.r_wire_col_ohm,
            r_sense=p.r_sense_ohm,
        )
        return (g_eff * 1e6).reshape(g_us.shape)

    def _mvm_generator(self, device: torch.device) -> torch.Generator:
        """The per-MVM noise generator of ``device`` (``meta`` has no generators: it takes a CPU one)."""
        key = str(device)
        if key not in self._mvm_generators:
            gen_device = device if device.type != "meta" else torch.device("cpu")
            self._mvm_generators[key] = generator(self._seed(), self.layer_name, "per-mvm", device=gen_device)
        return self._mvm_generators[key]

    def mvm_rng_state(self) -> dict[str, torch.Tensor]:
        """Snapshot of the per-MVM noise generators (restore with :meth:`set_mvm_rng_state`)."""
        return {key: gen.get_state() for key, gen in self._mvm_generators.items()}

    def set_mvm_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the per-MVM noise generators saved by :meth:`mvm_rng_state` (others restart from the seed)."""
        self._mvm_generators = {}
        for key, gen_state in state.items():
            self._mvm_generator(torch.device(key)).set_state(gen_state)

    def _gaussian(self, like: torch.Tensor) -> torch.Tensor:
        """Fresh N(0, 1) draws (contiguous) with the shape of ``like`` from this chip's per-MVM generator
        (``hw.sampling.gaussian``: ``exact`` = torch.randn, or the approximate ``pooled``; xbarlab.sampling)."""
        gen, sampler = self._mvm_generator(like.device), self.hw.sampling.gaussian
        return standard_normal(like.shape, generator=gen, device=like.device, dtype=like.dtype, sampler=sampler)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._require_programmed()
        self.forward_calls += 1
        x = self._dac(x)
        use_tiles = self.hw.adc.bits is not None and self._calibration_stage != "dac"
        if not use_tiles:
            return self._direct(x)
        return self._tiled(x)

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        assert self.w_ni is not None
        y = self._compute(x, self.w_ni, self.bias)
        if self.var_ni is not None:
            std = self._compute(x.detach() ** 2, self.var_ni, None).clamp_min_(0).sqrt_()
            y = y + std.mul_(self._gaussian(std))
        return y

    def _chunk(self, per_sample_elements: int) -> int:
        """Samples per chunk so that the partial sums of one chunk stay under :data:`MAX_PARTIAL_BYTES`."""
        return max(1, MAX_PARTIAL_BYTES // max(1, per_sample_elements * self.weight.element_size()))

    def _tile_matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """rows: (M, K) inputs → outputs (M, N) through row tiles, ADC and shift-and-add (groups = 1)."""
        lay = self.layout
        assert self.w_tiles is not None
        tr, r, s, n = lay.tiles_r, lay.rows, lay.num_slices, lay.n
        outs = []
        chunk = self._chunk(tr * s * n)
        fused = self._fused_weights(slice_dim=2)
        grad = rows.requires_grad or self.w_tiles.requires_grad
        out = None if grad else rows.new_empty((rows.shape[0], n))
        # one tile and one slice leave nothing to accumulate: the ADC writes the output itself (not while calibrating)
        direct = out is not None and tr * s == 1 and self._calibration_stage is None
        for start in range(0, rows.shape[0], chunk):
            part = rows[start : start + chunk]
            mc = part.shape[0]
            target = out[start : start + mc].view(1, mc, 1, n) if direct and out is not None else None
            if lay.k_pad != lay.k:  # zero rows of the last tile's unused word lines
                part = F.pad(part, (0, lay.k_pad - lay.k))
            xt = part.reshape(mc, tr, r).transpose(0, 1)  # (Tr, mc, R)
            if fused is not None:  # partial sums in LSB, variances in LSB² (ADC scale folded into the weights)
                with torch.no_grad():
                    codes = torch.bmm(xt.detach(), fused.weights).reshape(tr, mc, s, n)
                    if fused.row_var is not None:  # σ independent of G: c·Σx² per (tile, sample, slice)
                        sq = (xt.detach() ** 2).sum(-1).view(tr, mc, 1, 1)
                        var_lsb = sq * fused.row_var.view(1, 1, s, 1)
                    else:
                        assert fused.variances is not None
                        var_lsb = torch.bmm(xt.detach() ** 2, fused.variances).reshape(tr, mc, s, n)
                    q = self._adc_codes_noisy(codes, var_lsb, slice_dim=2, out=target)
                if grad:  # straight-through gradient of the unscaled partial sums, the same forward values
                    q = straight_through(torch.bmm(xt, self.w_tiles).reshape(tr, mc, s, n), q)
            else:
                p = torch.bmm(xt, self.w_tiles)  # (Tr, mc, S·N)
                var = (
                    torch.bmm(xt.detach() ** 2, self.var_tiles).reshape(tr, mc, s, n)
                    if self.var_tiles is not None
                    else None
                )
                q = self._adc_sums(p.reshape(tr, mc, s, n), var, slice_dim=2, out=target)
            if target is not None:
                continue
            if out is None:
                outs.append(q.sum((0, 2)))
            else:  # written in place: no concatenation copy (same reduction kernel, bit-identical)
                torch.sum(q, (0, 2), out=out[start : start + mc])
        return out if out is not None else torch.cat(outs, 0)

    def _compute(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ideal_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The digital reference: same input, ideal weights, no converters."""
        return self._compute(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        lay = self.layout
        return (
            f"name={self.layer_name!r}, hw={self.hw.name!r}, weight={tuple(self.weight.shape)}, "
            f"tiles={lay.tiles_r}x{lay.tiles_c} of {lay.rows}x{lay.cols}, slices={lay.num_slices}, "
            f"arrays={lay.num_arrays}, programmed={self.is_programmed}"
        )


def analog_layers(model: nn.Module) -> list[AnalogLayer]:
    """All analog layers of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, AnalogLayer)]


def require_analog_layers(model: nn.Module) -> list[AnalogLayer]:
    """The analog layers of ``model``; ``ValueError`` when it has none (it was not converted)."""
    layers = analog_layers(model)
    if not layers:
        raise ValueError("model: has no analog layers; convert it with xbarlab.convert(model, hw) first")
    return layers


__all__ = [
    "CHIP_BUFFERS",
    "AnalogLayer",
    "NotProgrammedError",
    "analog_layers",
    "require_analog_layers",
]
