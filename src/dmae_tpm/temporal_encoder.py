"""Temporal encoder: aggregates per-frame features into v_h (N x D) (Sec. 3.1).

``meanP`` is parameter-free (v_h is the per-frame [CLS] feature; TI/WTI does the pooling), ``seqTransf`` is
the CLIP4Clip/DRL temporal transformer: frame position embeddings, a small transformer over the sequence, and
a residual to its input. The paper feeds it ``v_tokens`` (all tokens of all frames) for MSR-VTT/MSVD and
``f_cls`` for DiDeMo/ActivityNet; either way v_h is read off the frames' [CLS] positions.

Initialisation (chosen by the model, see `DMAETPM`): with pretrained CLIP weights, CLIP4Clip/DRL/X-MLNet's copy of
CLIP's text blocks and text position embeddings (`init_from_clip_text`); otherwise `init_identity`, whose v_h is 2x
its input at step 0, so the scores start as CLIP's own cosines instead of a random branch's.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from .config import TemporalConfig
from .features import VideoFeatures

log = logging.getLogger(__name__)
# A temporal layer's parameters by the name of the same parameter in an open_clip ResidualAttentionBlock: both are
# pre-norm blocks, x + attn(ln_1(x)) then x + mlp(ln_2(x)).
_FROM_CLIP_BLOCK = (
    ("norm1.", "ln_1."),
    ("self_attn.in_proj_", "attn.in_proj_"),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("norm2.", "ln_2."),
    ("linear1.", "mlp.c_fc."),
    ("linear2.", "mlp.c_proj."),
)


class TemporalEncoder(nn.Module):
    """`activation`: the MLP activation of the layers, the backbone's text-block one (QuickGELU for OpenAI CLIP).

    It is in no state dict, so it must come from the architecture, the same when training and when a checkpoint is
    evaluated; and `init_from_clip_text` only reproduces CLIP's blocks with their activation. Default: GELU.
    """

    def __init__(self, cfg: TemporalConfig, embed_dim: int, activation: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.type == "seqTransf":
            self.frame_position = nn.Embedding(cfg.max_frames, embed_dim)
            nn.init.normal_(self.frame_position.weight, std=0.01)
            act = nn.GELU() if activation is None else copy.deepcopy(activation)
            layer = nn.TransformerEncoderLayer(
                embed_dim, max(1, embed_dim // cfg.head_width), 4 * embed_dim, dropout=0.0,
                activation=act, batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)

    @torch.no_grad()
    def init_identity(self) -> None:
        """Zero every residual branch's output projection and the frame position embedding.

        Each layer is then the identity, and with the residual to the input `forward` returns v_h = 2x at step 0:
        the direction of the CLIP features, and every score of the library is a cosine in v_h. The zeroed weights
        get gradients at once (their inputs are not zero), the other weights of a layer from the next step on.
        """
        self.frame_position.weight.zero_()
        for layer in self.transformer.layers:
            for proj in (layer.self_attn.out_proj, layer.linear2):
                proj.weight.zero_()
                proj.bias.zero_()

    @torch.no_grad()
    def init_from_clip_text(self, text_transformer: nn.Module, positional_embedding: torch.Tensor) -> bool:
        """CLIP4Clip / DRL / X-MLNet: layer i <- CLIP text block i, frame positions <- text positions[:max_frames].

        The copied blocks run without the causal mask. Returns False, changing nothing and logging why, when the
        text transformer does not fit (width, heads, activation, LayerScale, too few blocks or positions).
        """
        reason = self._clip_text_mismatch(text_transformer, positional_embedding)
        if reason is not None:
            log.warning("temporal encoder not initialised from CLIP's text transformer: %s", reason)
            return False
        for layer, block in zip(self.transformer.layers, text_transformer.resblocks[: self.cfg.layers], strict=True):
            for name, param in layer.named_parameters():
                param.copy_(block.get_parameter(_clip_block_name(name)))
        self.frame_position.weight.copy_(positional_embedding[: self.cfg.max_frames])  # (max_frames, D)
        return True

    def _clip_text_mismatch(self, text_transformer: nn.Module, positional_embedding: torch.Tensor) -> str | None:
        """Why CLIP's text blocks cannot be copied into the temporal layers, or None when they can."""
        blocks, (positions, width) = text_transformer.resblocks, positional_embedding.shape
        if self.cfg.layers > len(blocks):
            return f"temporal.layers={self.cfg.layers} exceeds the {len(blocks)} text blocks"
        if width != self.frame_position.embedding_dim:
            return f"the text width {width} is not the embedding width {self.frame_position.embedding_dim}"
        if positions < self.cfg.max_frames:
            return f"temporal.max_frames={self.cfg.max_frames} exceeds the {positions} text positions"
        for i, layer in enumerate(self.transformer.layers):
            reason = _block_mismatch(layer, blocks[i])
            if reason is not None:
                return f"text block {i}: {reason}"
        return None

    def forward(self, video: VideoFeatures) -> torch.Tensor:
        """Returns v_h: (B, N, D)."""
        if self.cfg.input == "f_cls":
            x, mask, per_frame = video.f_cls, video.frame_mask.bool(), 1  # (B, N, D)
        else:
            x, mask, per_frame = video.v_tokens, video.v_mask.bool(), video.tokens_per_frame  # (B, P, D)
        if self.cfg.type == "seqTransf":
            return self._transform(x, mask, per_frame)
        return x[:, ::per_frame]  # (B, N, D) the frames' [CLS] positions

    def _transform(self, x: torch.Tensor, mask: torch.Tensor, per_frame: int) -> torch.Tensor:
        n_frames = x.shape[1] // per_frame
        if n_frames > self.cfg.max_frames:
            raise ValueError(f"{n_frames} frames exceed temporal.max_frames={self.cfg.max_frames}; raise it")
        frame_idx = torch.arange(n_frames, device=x.device).repeat_interleave(per_frame)  # (P,)
        # A video with no real frame would make attention softmax over nothing (NaN); let it see itself.
        mask = mask.clone()
        mask[~mask.any(1), 0] = True
        *layers, last = self.transformer.layers
        y = x + self.frame_position(frame_idx)  # (B, P, D)
        for layer in layers:
            y = layer(y, src_key_padding_mask=~mask)  # (B, P, D)
        y = _cls_queries_layer(last, y, ~mask, per_frame)  # (B, N, D)
        return y + x[:, ::per_frame]  # residual to the CLIP features, as in CLIP4Clip


def _clip_block_name(name: str) -> str:
    """The name in an open_clip ResidualAttentionBlock of the temporal layer's parameter `name`."""
    for ours, theirs in _FROM_CLIP_BLOCK:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(name)


def _block_mismatch(layer: nn.TransformerEncoderLayer, block: nn.Module) -> str | None:
    """Why `layer` with `block`'s weights would not compute `block` (causal mask aside), or None."""
    if not all(isinstance(getattr(block, ls, nn.Identity()), nn.Identity) for ls in ("ls_1", "ls_2")):
        return "it has LayerScale, which the temporal layers lack"
    if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
        return "its attention is not an nn.MultiheadAttention (an open_clip custom block)"
    if block.attn.num_heads != layer.self_attn.num_heads:
        return f"{block.attn.num_heads} heads, the temporal layers {layer.self_attn.num_heads} (temporal.head_width)"
    theirs_act, ours_act = repr(getattr(getattr(block, "mlp", None), "gelu", None)), repr(layer.activation)
    if theirs_act != ours_act:  # repr: the type and its arguments, e.g. GELU(approximate='none') vs QuickGELU()
        return f"activation {theirs_act}, the temporal layers {ours_act}"
    if (block.ln_1.eps, block.ln_2.eps) != (layer.norm1.eps, layer.norm2.eps):
        return "its LayerNorm eps differs"
    theirs = dict(block.named_parameters())
    for name, param in layer.named_parameters():
        other = theirs.get(_clip_block_name(name))
        if other is None or other.shape != param.shape:
            shape = None if other is None else tuple(other.shape)
            return f"{_clip_block_name(name)} is {shape}, the temporal {name} {tuple(param.shape)}"
    return None


def _cls_queries_layer(layer: nn.TransformerEncoderLayer, y: torch.Tensor, padding: torch.Tensor,
                       per_frame: int) -> torch.Tensor:
    """The last pre-norm encoder layer, evaluated at the frames' [CLS] positions only.

    v_h reads nothing else from the last layer's output, and a position's output depends on the others only
    through its attention's keys and values, so the queries, residual and MLP can skip the K patch positions of
    every frame: the same v_h for a 1/(K+1) share of that layer's query-side work (all of it with input=f_cls).
    """
    h = layer.norm1(y)  # (B, P, D)
    q = h[:, ::per_frame]  # (B, N, D)
    attn = layer.self_attn(q, h, h, key_padding_mask=padding, need_weights=False)[0]  # (B, N, D)
    z = y[:, ::per_frame] + layer.dropout1(attn)  # (B, N, D)
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(z)))))
    return z + layer.dropout2(ff)  # (B, N, D)


def init_temporal(temporal: TemporalEncoder, backbone) -> str:
    """Initialise seqTransf from CLIP's text transformer when pretrained weights were loaded and it fits (CLIP4Clip,
    DRL, X-MLNet), else as the identity (v_h = 2x at step 0); returns which. A random branch would dominate v_h."""
    if temporal.cfg.type != "seqTransf":
        return "none"
    if temporal.cfg.init == "random":
        return "random"
    clip = backbone.clip
    if backbone.pretrained_loaded and temporal.init_from_clip_text(clip.transformer, clip.positional_embedding):
        how = "clip_text"
    else:
        temporal.init_identity()
        how = "identity"
    log.info("temporal encoder initialised: %s (activation %r)", how, temporal.transformer.layers[0].activation)
    return how
