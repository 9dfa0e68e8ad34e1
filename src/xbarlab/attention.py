"""Multi-head attention whose q/k/v and output projections are separate modules, so they can run on crossbars.

``nn.MultiheadAttention`` keeps its projections as a packed ``in_proj_weight`` (or ``q/k/v_proj_weight``) read
functionally by ``F.multi_head_attention_forward``; no crossbar layer could be called there. :func:`split_attention`
builds a :class:`SplitMultiheadAttention` holding four ``nn.Linear`` (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``) with the same weights, which :func:`xbarlab.convert` then converts like any Linear (each its own
analog layer with its own name and programming seed). The forward reproduces PyTorch's math (masks, batch_first,
is_causal, need_weights, average_attn_weights, add_bias_kv, add_zero_attn, dropout on the attention weights);
the attention products QKᵀ and softmax·V have no stationary weights and are computed digitally.

With digital (or ``ideal``) projections the output equals ``nn.MultiheadAttention`` to float rounding, not bit
exactly: PyTorch computes a packed projection as one GEMM of the (3E, E) weight and splits the result, here three
(E, E) GEMMs run; the blocking differs, so sums round differently (a few ulp, ~1e-7 relative in float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with its four projections as separate modules (see the module docstring).

    Same ``forward`` signature and return values as ``nn.MultiheadAttention.forward``. The attributes PyTorch's
    transformer layers read for their fused fast path are present: ``in_proj_weight`` / ``in_proj_bias`` are
    None and ``_qkv_same_embed_dim`` is False, so the fused path is never taken (it would read the weights
    directly).
    """

    in_proj_weight: None
    in_proj_bias: None
    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    out_proj: nn.Module

    def __init__(self, source: nn.MultiheadAttention) -> None:
        super().__init__()
        self.embed_dim = source.embed_dim
        self.kdim = source.kdim
        self.vdim = source.vdim
        self.num_heads = source.num_heads
        self.head_dim = source.head_dim
        self.dropout = source.dropout
        self.batch_first = source.batch_first
        self.add_zero_attn = source.add_zero_attn
        self._qkv_same_embed_dim = False  # disables the fused transformer fast path
        self.in_proj_weight = None
        self.in_proj_bias = None
        e = self.embed_dim
        if source._qkv_same_embed_dim:
            assert source.in_proj_weight is not None
            weights = list(source.in_proj_weight.detach().chunk(3))
        else:
            weights = [w.detach() for w in (source.q_proj_weight, source.k_proj_weight, source.v_proj_weight)]
        sources = [source.in_proj_weight] if source._qkv_same_embed_dim else [source.q_proj_weight]
        requires_grad = (
            any(w is not None and w.requires_grad for w in sources),
            source.in_proj_bias is not None and source.in_proj_bias.requires_grad,
        )
        biases = [None] * 3 if source.in_proj_bias is None else list(source.in_proj_bias.detach().chunk(3))
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
            lin = nn.Linear(w.shape[1], e, bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
            lin.weight.requires_grad_(requires_grad[0])
            if b is not None:
                lin.bias.requires_grad_(requires_grad[1])
            self.add_module(name, lin)
        self.out_proj = source.out_proj
        self.bias_k = source.bias_k
        self.bias_v = source.bias_v
        self.train(source.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of ``query`` over ``key``/``value``; shapes and mask rules of ``nn.MultiheadAttention``."""
        is_batched = query.dim() == 3
        if query.dim() not in (2, 3):
            raise ValueError(f"query: {query.dim()}-D; allowed: 2-D (unbatched) or 3-D (batched)")
        if self.batch_first and is_batched:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
        if not is_batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        out, weights = self._attend(
            query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )
        if not is_batched:
            out = out.squeeze(1)
            if weights is not None:
                weights = weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(1, 0)
        return out, weights

    def _masks(
        self,
        query: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        need_weights: bool,
        is_causal: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """Canonical (float) masks and the is_causal flag, by the rules of ``F.multi_head_attention_forward``."""
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        if is_causal and attn_mask is None:
            raise ValueError("attn_mask: None with is_causal=True; allowed: a causal mask (is_causal is a hint)")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        else:
            attn_mask = F._canonical_mask(
                mask=attn_mask,
                mask_name="attn_mask",
                other_type=None,
                other_name="",
                target_type=query.dtype,
                check_other=False,
            )
            if key_padding_mask is not None:
                is_causal = False
        return key_padding_mask, attn_mask, is_causal

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        need_weights: bool,
        attn_mask: torch.Tensor | None,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sequence-first (L, N, E) attention; the projections are called as modules."""
        tgt_len, bsz, _ = query.shape
        src_len = key.shape[0]
        heads, head_dim, e = self.num_heads, self.head_dim, self.embed_dim
        masks = self._masks(query, key_padding_mask, attn_mask, need_weights, is_causal)
        key_padding_mask, attn_mask, is_causal = masks
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if attn_mask is not None:
            expected = (tgt_len, src_len) if attn_mask.dim() == 2 else (bsz * heads, tgt_len, src_len)
            if attn_mask.dim() not in (2, 3) or tuple(attn_mask.shape) != expected:
                raise ValueError(f"attn_mask: shape {tuple(attn_mask.shape)}; allowed: {expected}")
            if attn_mask.dim() == 2:
                attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros((bsz * heads, 1, head_dim), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.size(1)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (bsz, src_len):
                raise ValueError(f"key_padding_mask: shape {tuple(key_padding_mask.shape)}; allowed: {(bsz, src_len)}")
            kpm = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            scores_q = q * math.sqrt(1.0 / float(head_dim))
            if attn_mask is not None:
                scores = torch.baddbmm(attn_mask, scores_q, k.transpose(-2, -1))
            else:
                scores = torch.bmm(scores_q, k.transpose(-2, -1))
            weights = F.softmax(scores, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, e)
            out = self.out_proj(out).view(tgt_len, bsz, -1)
            weights = weights.view(bsz, heads, tgt_len, src_len)
            return out, weights.mean(dim=1) if average_attn_weights else weights
        if attn_mask is not None:
            if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(0)
            else:
                attn_mask = attn_mask.view(bsz, heads, -1, src_len)
        out = F.scaled_dot_product_attention(
            q.view(bsz, heads, tgt_len, head_dim),
            k.view(bsz, heads, src_len, head_dim),
            v.view(bsz, heads, src_len, head_dim),
            attn_mask,
            dropout_p,
            is_causal,
        )
        out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, e)
        return self.out_proj(out).view(tgt_len, bsz, -1), None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def split_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` (in place) by a :class:`SplitMultiheadAttention`;
    returns the model (or the replacement, when ``model`` is itself an ``nn.MultiheadAttention``)."""
    if isinstance(model, nn.MultiheadAttention):
        return SplitMultiheadAttention(model)
    done: dict[int, SplitMultiheadAttention] = {}  # a shared attention stays shared
    for module in list(model.modules()):
        for child_name, child in list(module._modules.items()):
            if isinstance(child, nn.MultiheadAttention):
                if id(child) not in done:
                    done[id(child)] = SplitMultiheadAttention(child)
                setattr(module, child_name, done[id(child)])
    return model
