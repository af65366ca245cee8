"""The CLIP text encoder g and video encoder h of Sec. 3.1 / Appendix A.1, over an open_clip CLIP model.

Both towers are run by hand so that every token is kept: the text tower returns all context positions
(word features for the text-side DMAE, Sec. 3.2) and the visual tower returns the [CLS] and patch tokens
of every frame, after ln_post and the projection, as CLIP4Clip / TS2-Net do (Appendix A.1).
"""

from __future__ import annotations

import functools
import logging
import zipfile
from pathlib import Path

import open_clip
import torch
from open_clip.transform import merge_preprocess_dict
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from .config import BackboneConfig
from .features import TextFeatures, VideoFeatures

log = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
SUPPORTED = (
    "open_clip CLIP models with a ViT image tower and CLIP's text transformer "
    "(ViT-B-32, ViT-B-16, ViT-L-14, ..., dmae-tiny)"
)
# Entries of TorchScript checkpoints that are not weights of an open_clip CLIP model.
_TORCHSCRIPT_EXTRA_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})


def register_model_configs() -> None:
    """Make the configs shipped in dmae_tpm/model_configs (e.g. dmae-tiny) known to open_clip; idempotent."""
    shipped = {path.stem for path in MODEL_CONFIG_DIR.glob("*.json")}
    if not shipped <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def _unsupported_reason(clip: nn.Module) -> str | None:
    """Why `clip` cannot serve as g and h, or None when it can."""
    if not isinstance(clip, open_clip.CLIP):
        return f"it is a {type(clip).__name__}, not an open_clip CLIP with CLIP's own text transformer"
    visual = clip.visual
    if not isinstance(visual, VisionTransformer):
        return f"its image tower is a {type(visual).__name__}, not an open_clip VisionTransformer"
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.proj is None:
        return "its VisionTransformer does not pool the [CLS] token through ln_post and proj"
    if not isinstance(visual.patch_dropout, nn.Identity):
        return "it uses patch dropout, which changes the number of tokens per frame"
    if clip.text_pool_type not in ("argmax", "eos"):
        return f"its text tower pools with {clip.text_pool_type!r}, not at the [EOS] token"
    return None


def _run_transformer(
    transformer: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Run an open_clip Transformer on batch-first tokens (B, L, W)."""
    # Since open_clip grew `batch_first`, Transformer.forward takes (B, L, W) whatever its layout;
    # older releases took (L, B, W) and left the permute to the caller.
    if hasattr(transformer, "batch_first"):
        return transformer(x, attn_mask=attn_mask)  # (B, L, W)
    return transformer(x.permute(1, 0, 2), attn_mask=attn_mask).permute(1, 0, 2)  # (B, L, W)


def _vit_embeds_by_parts(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The token embeddings of VisionTransformer.forward, for open_clip releases without `_embeds`."""
    x = visual.conv1(images)  # (M, W, gh, gw)
    x = x.flatten(2).transpose(1, 2)  # (M, K, W)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (M, 1, W)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (M, K+1, W)
    return visual.ln_pre(visual.patch_dropout(x))  # (M, K+1, W)


def _vit_embeds(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    if hasattr(visual, "_embeds"):
        return visual._embeds(images)  # (M, K+1, W)
    return _vit_embeds_by_parts(visual, images)  # (M, K+1, W)


def pixel_affine(mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / 255 - mean) / std written as x * scale + shift: two in-place passes instead of four copies."""
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std  # (3, 1, 1) each


def normalize_pixels(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> normalised float32, with scale / shift from `pixel_affine`."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 frames, got {images.dtype}")
    return images.to(torch.float32).mul_(scale).add_(shift)  # the conversion is a new tensor: safe in place


class CLIPDualEncoder(nn.Module):
    """The CLIP text encoder g and video encoder h of Sec. 3.1 / Appendix A.1, over an open_clip CLIP model.

    Features are in the joint space and not L2-normalised. `encode_video` expects frames already resized to
    `image_size` and normalised with `mean` / `std`. The wrapped model is `self.clip`, so its parameters are
    named `clip.*`; `logit_scale` is the CLIP temperature parameter (tau of the losses). `pretrained_loaded`
    says whether `clip` holds pretrained weights (the temporal encoder's initialisation depends on it).
    """

    def __init__(
        self,
        clip: open_clip.CLIP,
        tokenizer: open_clip.SimpleTokenizer,
        model_name: str = "custom",
        word_mask_specials: bool = True,
        pretrained_loaded: bool = False,
    ) -> None:
        super().__init__()
        reason = _unsupported_reason(clip)
        if reason is not None:
            raise ValueError(f"backbone {model_name!r} is not supported: {reason}. Supported: {SUPPORTED}.")
        self.clip = clip
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.word_mask_specials = word_mask_specials
        self.pretrained_loaded = pretrained_loaded
        visual = clip.visual
        self.embed_dim: int = visual.proj.shape[1]
        self.image_size: tuple[int, int] = tuple(visual.image_size)
        self.tokens_per_frame: int = visual.grid_size[0] * visual.grid_size[1] + 1  # K + 1
        preprocess = open_clip.get_model_preprocess_cfg(clip)
        self.mean: tuple[float, ...] = tuple(preprocess["mean"])
        self.std: tuple[float, ...] = tuple(preprocess["std"])
        scale, shift = pixel_affine(self.mean, self.std)
        # not in the state dict: they follow the preprocess config, and old checkpoints load unchanged
        self.register_buffer("pixel_scale", scale, persistent=False)  # (3, 1, 1)
        self.register_buffer("pixel_shift", shift, persistent=False)  # (3, 1, 1)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def context_length(self) -> int:
        return self.clip.positional_embedding.shape[0]

    @property
    def text_activation(self) -> nn.Module:
        """The MLP activation of CLIP's text blocks: QuickGELU for OpenAI's weights, else usually GELU.

        It is in no state dict, so whatever must compute like these blocks (the temporal encoder, initialised from
        them) takes it from here, the architecture, rather than from the weights.
        """
        return self.clip.transformer.resblocks[0].mlp.gelu

    def tokenize(self, texts: list[str], context_length: int) -> torch.LongTensor:
        """[BOS] words [EOS] padding, truncated to `context_length` keeping [EOS] (open_clip's tokenizer)."""
        self._check_length(context_length)
        return self.tokenizer(texts, context_length=context_length)  # (B, L)

    # ----- text: g(t) -----

    def encode_text(self, tokens: torch.LongTensor) -> TextFeatures:
        """g(t) of Sec. 3.1: t_cls at [EOS] as open_clip pools it, all L projected tokens, the word mask."""
        hidden = self._text_hidden(tokens)  # (B, L, W)
        t_tokens = self._project_text(hidden)  # (B, L, D)
        eos_id = getattr(self.clip, "text_eos_id", None)
        t_cls = text_global_pool(t_tokens, tokens, self.clip.text_pool_type, eos_token_id=eos_id)  # (B, D)
        return TextFeatures(t_cls=t_cls, t_tokens=t_tokens, t_mask=self.word_mask(tokens))

    def word_mask(self, tokens: torch.LongTensor) -> torch.Tensor:
        """True on the word tokens strictly between [BOS] (position 0) and [EOS] (Appendix A.1)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)  # (B, L)
        # Pool the positions themselves so the mask ends exactly where t_cls is read.
        eos_id = getattr(self.clip, "text_eos_id", None)
        eos = text_global_pool(positions.unsqueeze(-1), tokens, self.clip.text_pool_type, eos_id)  # (B, 1)
        if self.word_mask_specials:
            return positions <= eos  # (B, L)
        return (positions > 0) & (positions < eos)  # (B, L)

    def _check_length(self, length: int) -> None:
        if length > self.context_length:
            raise ValueError(
                f"text length {length} exceeds the context length {self.context_length} "
                f"of {self.model_name!r}"
            )

    def _text_hidden(self, tokens: torch.LongTensor) -> torch.Tensor:
        clip = self.clip
        length = tokens.shape[1]
        self._check_length(length)
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
        x = x + clip.positional_embedding[:length].to(cast_dtype)  # (B, L, W)
        # A causal mask cropped to L x L is the causal mask of L tokens.
        attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]  # (L, L)
        x = _run_transformer(clip.transformer, x, attn_mask)  # (B, L, W)
        return clip.ln_final(x)  # (B, L, W)

    def _project_text(self, hidden: torch.Tensor) -> torch.Tensor:
        projection = self.clip.text_projection
        if projection is None:
            return hidden  # (B, L, D)
        if isinstance(projection, nn.Linear):
            return projection(hidden)  # (B, L, D)
        return hidden @ projection  # (B, L, D)

    # ----- video: h(v) -----

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """All K+1 tokens per image after ln_post and proj (M, K+1, D); token 0 is CLIP's image feature."""
        visual = self.clip.visual
        x = _vit_embeds(visual, images.to(visual.conv1.weight.dtype))  # (M, K+1, W)
        x = _run_transformer(visual.transformer, x)  # (M, K+1, W)
        return visual.ln_post(x) @ visual.proj  # (M, K+1, D)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> VideoFeatures:
        """h(v) of Sec. 3.1: per-frame [CLS] features and all frame tokens, frame-major; padding gives zeros.

        Only real frames go through the ViT, so padding costs no compute and cannot change real features.
        ``frames`` are either normalised floats or uint8 as the data pipeline gives them (see `normalize`).
        """
        self._check_frames(frames, frame_mask)
        batch, num_frames = frame_mask.shape
        real = frame_mask.reshape(-1)  # (B*N,)
        images = frames.flatten(0, 1)[real]  # (R, 3, H, W)
        if images.dtype == torch.uint8:  # straight from the data pipeline: normalise on the device
            images = self.normalize(images)
        encoded = self.encode_frames(images) if bool(real.any()) else None  # (R, K+1, D)
        dtype = self.clip.visual.proj.dtype if encoded is None else encoded.dtype
        shape = (batch * num_frames, self.tokens_per_frame, self.embed_dim)
        tokens = frames.new_zeros(shape, dtype=dtype)  # (B*N, K+1, D)
        if encoded is not None:
            tokens[real] = encoded  # (B*N, K+1, D)
        tokens = tokens.view(batch, num_frames, self.tokens_per_frame, self.embed_dim)  # (B, N, K+1, D)
        return VideoFeatures(f_cls=tokens[:, :, 0], v_tokens=tokens.flatten(1, 2), frame_mask=frame_mask)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float32, (x / 255 - mean) / std with the backbone's mean / std.

        The data pipeline ships uint8 frames (4x fewer bytes through DataLoader workers, collate and the host-to-
        device copy) and normalisation runs here, on the model's device, on the real frames only.
        """
        return normalize_pixels(images, self.pixel_scale, self.pixel_shift)

    def _check_frames(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> None:
        expected = (*frame_mask.shape, 3, *self.image_size)
        if frame_mask.dtype != torch.bool or frame_mask.ndim != 2 or tuple(frames.shape) != expected:
            raise ValueError(
                f"expected frames (B, N, 3, H, W) = {expected} and a bool frame_mask (B, N) for "
                f"{self.model_name!r}; got frames {tuple(frames.shape)}, frame_mask "
                f"{tuple(frame_mask.shape)} {frame_mask.dtype}"
            )


# ----- building -----


@functools.cache
def _tokenizer(name: str) -> open_clip.SimpleTokenizer:
    # Loading the BPE vocabulary takes ~0.5 s; the tokenizer holds no per-call state.
    return open_clip.get_tokenizer(name)


def _resolve_name(name: str) -> str:
    cleaned = name.replace("/", "-")  # open_clip's own convention: "ViT-B/32" is "ViT-B-32"
    if cleaned not in open_clip.list_models():
        raise ValueError(
            f"unknown backbone {name!r}: not an open_clip model config. See open_clip.list_models() for the "
            f"available names, e.g. 'ViT-B-32', 'ViT-B-16', or this package's 'dmae-tiny'."
        )
    return cleaned


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.endswith("constants.pkl") for entry in archive.namelist())


def _load_torchscript(name: str, path: Path) -> open_clip.CLIP:
    """Weights of a TorchScript archive (OpenAI's released CLIP .pt files, as CLIP4Clip downloads them)."""
    # torch.load(weights_only=True) refuses TorchScript, and OpenAI trained with QuickGELU.
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    clip = open_clip.create_model(name, force_quick_gelu=True)
    expected = clip.state_dict()
    state = {
        key: value for key, value in state.items() if key in expected or key not in _TORCHSCRIPT_EXTRA_KEYS
    }
    clip.load_state_dict(state, strict=True)
    return clip


def _architecture_overrides(name: str, pretrained: str | None) -> dict:
    """The create_model overrides that `_create_clip` applies with `pretrained`'s weights, without loading them.

    The activation (QuickGELU for OpenAI's weights) and the pixel statistics are in no state dict, so a model rebuilt
    to receive a checkpoint must take them from `pretrained` too, or it computes other features than the trained one.
    """
    if pretrained is None:
        return {}
    tag = open_clip.get_pretrained_cfg(name, pretrained)
    if tag:
        preprocess = merge_preprocess_dict({}, tag)
        preprocess.pop("size", None)  # loading the weights sets it from the image tower, as create_model does here
        return {"force_quick_gelu": tag.get("quick_gelu", False), "force_preprocess_cfg": preprocess}
    path = Path(pretrained).expanduser()
    if not path.is_file():
        log.warning(
            "pretrained checkpoint %r of backbone %r is not here, so whether it is an OpenAI TorchScript file "
            "(QuickGELU) is unknown: building %r's own config", str(path), name, name
        )
        return {}
    return {"force_quick_gelu": True} if _is_torchscript(path) else {}  # as _load_torchscript builds it


def _create_clip(name: str, pretrained: str | None, load_weights: bool = True) -> open_clip.CLIP:
    if pretrained is None or not load_weights:
        return open_clip.create_model(name, **_architecture_overrides(name, pretrained))
    tag = open_clip.get_pretrained_cfg(name, pretrained)
    if tag:
        # open_clip 3.x only warns when the tag's weights were trained with QuickGELU and the config is not.
        return open_clip.create_model(
            name, pretrained=pretrained, force_quick_gelu=tag.get("quick_gelu", False)
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {str(path)!r} for backbone {name!r} does not exist. Pass an existing "
            f"checkpoint file, None for random init, or one of the open_clip tags "
            f"{open_clip.list_pretrained_tags_by_model(name)}."
        )
    if _is_torchscript(path):
        return _load_torchscript(name, path)
    return open_clip.create_model(name, pretrained=str(path))


def build_backbone(cfg: BackboneConfig, load_weights: bool = True) -> CLIPDualEncoder:
    """g and h of Sec. 3.1 from an open_clip model name and optional pretrained weights (Appendix A.1).

    A local checkpoint may be an open_clip / `torch.save(model.state_dict())` file (also wrapped in
    {"state_dict": ...} or with DDP's "module." prefix), a .safetensors file, or an OpenAI TorchScript .pt.
    `load_weights=False` builds the architecture those weights need (QuickGELU, pixel statistics) with random
    weights and loads nothing: for a checkpoint that holds every weight.
    """
    from .clip_pretraining import weights_path  # it builds backbones itself

    register_model_configs()
    name = _resolve_name(cfg.name)
    weights = weights_path(cfg)
    # The architecture only (load_weights=False) comes from `pretrained`: a pre-training checkpoint is a state_dict.
    clip = _create_clip(name, weights if load_weights else cfg.pretrained, load_weights)
    if cfg.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return CLIPDualEncoder(
        clip, _tokenizer(name), model_name=name, word_mask_specials=cfg.word_mask_specials,
        pretrained_loaded=load_weights and weights is not None,
    )
