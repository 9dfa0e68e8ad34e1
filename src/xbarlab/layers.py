"""Analog layers: convolutions and linear layers computed on simulated crossbar tiles.

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
from xbarlab.converters import RangeObserver, max_code, quantize_uniform, straight_through
from xbarlab.hardware import HardwareConfig
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
from xbarlab.seeding import generator

MAX_PARTIAL_BYTES = 8 * 2**20
"""Upper bound (bytes) on the per-tile partial sums materialised at once in the tiled forward path.

Small on purpose: chunks of a few MiB stay in the CPU caches and reuse the allocator's memory, while chunks of
hundreds of MiB are fresh ``mmap`` pages on every call (page faults dominated the time: ResNet-20 with ADC and
per-MVM noise ran 2.4× faster with 8–16 MiB chunks than with 256 MiB, see docs/simulator.md, "Speed")."""

CHIP_BUFFERS = ("g_prog", "nu", "read_xi", "fault_code", "w_max", "chip_seed", "chip_time")
DERIVED_BUFFERS = ("w_ni", "var_ni", "w_tiles", "var_tiles", "tile_channels")
CONVERTER_BUFFERS = ("dac_range", "dac_signed", "adc_range")


class NotProgrammedError(RuntimeError):
    """Raised when an analog layer is used before a chip instance was programmed or calibrated."""


class AnalogLayer(nn.Module):
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
        self._mvm_generators: dict[str, torch.Generator] = {}
        self.forward_calls = 0
        """Calls of :meth:`forward` (a plain int, no host sync): the chip's coverage check counts them."""

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
        """Sample one chip instance: programming variation, faults, drift exponents and frozen read noise."""
        hw, lay = self.hw, self.layout
        dev = hw.device
        w2d = weight_to_matrix(self.weight.detach().to("cpu", torch.float64), self.groups)
        w_max = float(w2d.abs().max()) if w2d.numel() else 0.0
        digits = target_digits(w2d, w_max, lay)
        g_target = digits_to_conductance_us(digits, lay, dev.g_on_us, dev.g_off_us)
        g = devices.apply_programming(g_target, hw.programming, dev, generator(seed, self.layer_name, "programming"))
        g, code = devices.apply_stuck_at_faults(g, hw.faults, dev, generator(seed, self.layer_name, "faults"))
        target = self.weight.device
        self.g_prog = g.to(target)
        self.fault_code = code.to(target)
        self.nu = None
        if hw.drift.kind != "none":
            nu = devices.sample_drift_exponents(g_target, hw.drift, dev, generator(seed, self.layer_name, "drift"))
            self.nu = nu.to(target)
        self.read_xi = None
        if hw.read_noise.kind != "none" and hw.read_noise.mode == "frozen":
            self.read_xi = devices.randn(g.shape, generator(seed, self.layer_name, "read")).to(target)
        self.w_max = torch.tensor(w_max, dtype=torch.float64, device=target)
        self.chip_seed = torch.tensor(seed, dtype=torch.int64, device=target)
        self.chip_time = torch.tensor(devices.initial_time_s(hw.drift), dtype=torch.float64, device=target)
        self.dac_range = None
        self.dac_signed = None
        self.adc_range = None
        self._mvm_generators = {}
        self.refresh()

    @torch.no_grad()
    def set_time(self, t_seconds: float) -> None:
        """Move the chip to time ``t_seconds`` (s) and recompute the effective weights."""
        self._require_programmed()
        devices.check_time(self.hw.drift, t_seconds)
        self.chip_time = torch.tensor(float(t_seconds), dtype=torch.float64, device=self.weight.device)
        self.refresh()

    def read_conductances_us(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(conductances read at the current chip time, read-noise σ) in µS, before parasitics."""
        assert self.g_prog is not None and self.chip_time is not None
        hw = self.hw
        t = float(self.chip_time)
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
        w_max = float(self.w_max)
        slices = decode_weights(g_read, lay, w_max, g_on, g_off)  # (G, S, K, N) float64
        dtype = self.weight.dtype
        fmt = self._memory_format()
        self.w_ni = matrix_to_weight(slices.sum(1), self.weight.shape).to(dtype).contiguous(memory_format=fmt)
        per_mvm = hw.read_noise.kind != "none" and hw.read_noise.mode == "per_mvm"
        var = decode_variance(sigma**2, lay, w_max, g_on, g_off) if per_mvm else None
        self.var_ni = (
            matrix_to_weight(var.sum(1), self.weight.shape).to(dtype).contiguous(memory_format=fmt)
            if var is not None
            else None
        )
        if not torch.isfinite(self.w_ni).all() or (self.var_ni is not None and not torch.isfinite(self.var_ni).all()):
            raise ValueError(
                f"analog layer '{self.layer_name}': the chip's effective weights are not finite at t = "
                f"{float(self.chip_time) if self.chip_time is not None else 0.0:g} s (conductances overflow float "
                f"range; programming.sigma = {hw.programming.sigma:g}, kind {hw.programming.kind!r}): reduce the "
                "variation"
            )
        if hw.adc.bits is not None:
            self.w_tiles = self._to_tiles(slices).to(dtype)
            self.var_tiles = self._to_tiles(var).to(dtype) if var is not None else None
        else:
            self.w_tiles = None
            self.var_tiles = None

    def _memory_format(self) -> torch.memory_format:
        """The source weight's memory format (channels-last 2-D convolutions stay channels-last)."""
        w = self.weight
        if w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format

    def _to_tiles(self, per_slice: torch.Tensor) -> torch.Tensor:
        """(G, S, K, N) per-slice weights → (G·Tr, rows, S·N) row-tile matrices for a batched matmul."""
        lay = self.layout
        padded = F.pad(per_slice, (0, 0, 0, lay.k_pad - lay.k))
        tiles = padded.reshape(lay.groups, lay.num_slices, lay.tiles_r, lay.rows, lay.n)
        return tiles.permute(0, 2, 3, 1, 4).reshape(lay.groups * lay.tiles_r, lay.rows, -1).contiguous()

    def _apply_parasitics(self, g_us: torch.Tensor) -> torch.Tensor:
        from xbarlab.circuits import effective_conductance

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

    # ------------------------------------------------------------------------------------------------ converters
    def start_calibration(self, stage: str) -> None:
        """Begin observing converter ranges: stage ``dac`` (inputs) or ``adc`` (partial sums)."""
        hw = self.hw
        if stage == "dac":
            self._observers = {"dac": RangeObserver(hw.dac.range_mode, hw.dac.percentile)}
        else:
            self._observers = {
                "adc": RangeObserver(hw.adc.range_mode, hw.adc.percentile, channels=self.layout.num_slices)
            }
        self._calibration_stage = stage

    def finish_calibration(self) -> None:
        """Store the observed ranges as the converter calibration."""
        if self._observers is None:
            return
        device = self.weight.device
        if "dac" in self._observers:
            obs = self._observers["dac"]
            self.dac_range = obs.result()[0].to(device=device, dtype=torch.float32)
            self.dac_signed = torch.tensor(obs.min_value < 0, device=device)
        if "adc" in self._observers:
            self.adc_range = self._observers["adc"].result().to(device=device, dtype=torch.float32)
        self._observers = None
        self._calibration_stage = None

    def _dac(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.hw.dac.bits
        if self._calibration_stage == "dac":
            assert self._observers is not None
            self._observers["dac"].update(x)
            return x
        if bits is None:
            return x
        if self.dac_range is None or self.dac_signed is None:
            raise NotProgrammedError(
                f"analog layer '{self.layer_name}': DAC range not calibrated; call xbarlab.calibrate(model, loader)"
            )
        return quantize_uniform(x, bits, self.dac_range, signed=bool(self.dac_signed))

    def _mvm_generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._mvm_generators:
            seed = int(self.chip_seed) if self.chip_seed is not None else 0
            self._mvm_generators[key] = generator(seed, self.layer_name, "per-mvm", device=device)
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
        """Fresh N(0, 1) draws (contiguous) with the shape of ``like`` from this chip's per-MVM generator."""
        return torch.randn(like.shape, generator=self._mvm_generator(like.device), device=like.device, dtype=like.dtype)

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

    def _adc_sums(self, partial: torch.Tensor, var: torch.Tensor | None, *, slice_dim: int) -> torch.Tensor:
        """Per-MVM read noise (variance ``var``) plus ADC input noise, then per-slice quantisation.

        Both noises are Gaussian and independent, so one draw with the summed variance represents them: in LSB,
        code = round(p/step + sqrt(var/step² + noise_lsb²)·z), clamped to the signed code range. ``partial`` and
        ``var`` are consumed (modified in place) when they do not need gradients; with gradients the quantiser is a
        straight-through estimator. While calibrating, partial sums (with read noise) are observed and returned
        unquantised.
        """
        hw = self.hw
        if self._calibration_stage == "adc":
            assert self._observers is not None
            if var is not None:
                partial = partial + var.clamp_min(0).sqrt() * self._gaussian(var)
            for s in range(partial.shape[slice_dim]):
                self._observers["adc"].update(partial.select(slice_dim, s), channel=s)
            return partial
        if self.adc_range is None:
            raise NotProgrammedError(
                f"analog layer '{self.layer_name}': ADC range not calibrated; call xbarlab.calibrate(model, loader)"
            )
        assert hw.adc.bits is not None
        top = max_code(hw.adc.bits, True)
        shape = [1] * partial.dim()
        shape[slice_dim] = -1
        rng = self.adc_range.to(partial.dtype)
        step = (rng / top).view(shape)
        inv_step = torch.where(rng > 0, top / rng.clamp_min(torch.finfo(rng.dtype).tiny), 0.0).view(shape)
        codes = partial.detach().clone() if partial.requires_grad else partial
        codes.mul_(inv_step)
        if var is not None:
            std = var.detach().mul_(inv_step.square())
            if hw.adc.noise_lsb > 0:
                std.add_(hw.adc.noise_lsb**2)
            codes.addcmul_(std.clamp_min_(0).sqrt_(), self._gaussian(codes))
        elif hw.adc.noise_lsb > 0:
            codes.add_(self._gaussian(codes), alpha=hw.adc.noise_lsb)
        values = codes.round_().clamp_(-top, top).mul_(step)
        return straight_through(partial, values)

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
        for start in range(0, rows.shape[0], chunk):
            part = rows[start : start + chunk]
            mc = part.shape[0]
            xt = F.pad(part, (0, lay.k_pad - lay.k)).reshape(mc, tr, r).transpose(0, 1)  # (Tr, mc, R)
            p = torch.bmm(xt, self.w_tiles)  # (Tr, mc, S·N)
            var = (
                torch.bmm(xt.detach() ** 2, self.var_tiles).reshape(tr, mc, s, n)
                if self.var_tiles is not None
                else None
            )
            q = self._adc_sums(p.reshape(tr, mc, s, n), var, slice_dim=2)
            outs.append(q.sum((0, 2)))
        return torch.cat(outs, 0)

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


class AnalogLinear(AnalogLayer):
    """Analog replacement of ``nn.Linear``."""

    def __init__(self, source: nn.Linear, layer_name: str, hw: HardwareConfig) -> None:
        super().__init__(source, layer_name, hw, groups=1)
        self.in_features = source.in_features
        self.out_features = source.out_features

    def _compute(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._tile_matmul(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y


class AnalogConv(AnalogLayer):
    """Analog replacement of ``nn.Conv1d`` / ``nn.Conv2d`` (groups, dilation, stride and padding modes)."""

    def __init__(self, source: nn.Conv1d | nn.Conv2d, layer_name: str, hw: HardwareConfig) -> None:
        super().__init__(source, layer_name, hw, groups=source.groups)
        self.ndim = 1 if isinstance(source, nn.Conv1d) else 2
        self.in_channels = source.in_channels
        self.out_channels = source.out_channels
        self.kernel_size: tuple[int, ...] = tuple(source.kernel_size)
        self.stride: tuple[int, ...] = tuple(source.stride)
        self.dilation: tuple[int, ...] = tuple(source.dilation)
        self.padding: Any = source.padding
        self.padding_mode = source.padding_mode
        self._reversed_padding_repeated_twice = list(source._reversed_padding_repeated_twice)

    def _compute(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int | None = None
    ) -> torch.Tensor:
        fn = F.conv1d if self.ndim == 1 else F.conv2d
        groups = self.groups if groups is None else groups
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return fn(x, weight, bias, self.stride, 0, self.dilation, groups)  # type: ignore[arg-type]
        return fn(x, weight, bias, self.stride, self.padding, self.dilation, groups)  # type: ignore[arg-type]

    def _to_tiles(self, per_slice: torch.Tensor) -> torch.Tensor:
        """Per-slice weights (G, S, K, N) → one grouped convolution computing every tile's partial sums.

        Row tile t of group g holds rows [t·rows, (t+1)·rows) of the channel-major matrix (channel, kernel
        position). Its partial sums are a convolution over the channels it touches (at most ``cg``), with the
        kernel positions outside the tile zeroed: the result has G·Tr·S·N output channels in (g, t, s, n) order,
        and ``tile_channels`` lists the input channels each (g, t) group reads.
        """
        lay = self.layout
        g, s, tr, n = lay.groups, lay.num_slices, lay.tiles_r, lay.n
        kk = int(torch.tensor(self.kernel_size).prod())
        cin_g = self.in_channels // g
        rows = torch.arange(lay.k)
        tile = rows // lay.rows
        chan = rows // kk
        pos = rows % kk
        first = torch.div(torch.arange(tr) * lay.rows, kk, rounding_mode="floor")  # first channel of each tile
        local = chan - first[tile]
        cg = int(local.max()) + 1
        w = torch.zeros(g, tr, cg, kk, s, n, dtype=per_slice.dtype)
        w[:, tile, local, pos] = per_slice.permute(0, 2, 1, 3)  # (G, K, S, N)
        w = w.permute(0, 1, 4, 5, 2, 3).reshape(g * tr * s * n, cg, *self.kernel_size)
        chans = (first.view(tr, 1) + torch.arange(cg).view(1, cg)).clamp_max(cin_g - 1)
        chans = chans.view(1, tr, cg) + (torch.arange(g) * cin_g).view(g, 1, 1)
        self.tile_channels = chans.reshape(-1).to(self.weight.device)
        return w.contiguous()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.ndim + 1:  # unbatched input, as nn.Conv accepts it
            return self._tiled(x.unsqueeze(0)).squeeze(0)
        lay = self.layout
        assert self.w_tiles is not None and self.tile_channels is not None
        g, s, tr, n = lay.groups, lay.num_slices, lay.tiles_r, lay.n
        outs = []
        chunk = self._chunk_for(x)
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk].index_select(1, self.tile_channels)
            p = self._compute(xs, self.w_tiles, None, groups=g * tr)  # (b, G·Tr·S·N, *out)
            spatial = p.shape[2:]
            shape = (p.shape[0], g, tr, s, n, *spatial)
            var = None
            if self.var_tiles is not None:
                var = self._compute(xs.detach() ** 2, self.var_tiles, None, groups=g * tr).view(shape)
            q = self._adc_sums(p.view(shape), var, slice_dim=3)
            # tiles and slices accumulated digitally (the slice significance is folded into the decoded values)
            outs.append(q.sum((2, 3)).reshape(q.shape[0], g * n, *spatial))
        y = torch.cat(outs, 0)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * self.ndim))
        return y

    def _chunk_for(self, x: torch.Tensor) -> int:
        lay = self.layout
        spatial = int(torch.tensor(x.shape[2:]).prod())  # upper bound of output positions (stride ≥ 1)
        return self._chunk(lay.groups * lay.tiles_r * lay.num_slices * lay.n * spatial)


def analog_layers(model: nn.Module) -> list[AnalogLayer]:
    """All analog layers of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, AnalogLayer)]


__all__ = [
    "CHIP_BUFFERS",
    "AnalogConv",
    "AnalogLayer",
    "AnalogLinear",
    "NotProgrammedError",
    "analog_layers",
]
