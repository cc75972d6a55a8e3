"""Convert the original CLIPSeg release (timojl/clipseg) into a transformers CLIPSeg folder.

The release ships only the decoder (`rd64-uni.pth`, `rd64-uni-refined.pth`, ~1 MB) and loads it
non-strictly on top of OpenAI's CLIP ViT-B/16. Here the CLIP part comes from OpenAI's own `ViT-B-16.pt`
(TorchScript), an OpenAI-layout state dict or a transformers CLIPModel (`openai/clip-vit-base-patch16`,
same weights); the decoder's keys are renamed to transformers' names. No code from any file runs: state
dicts are read with `torch.load(weights_only=True)`, TorchScript archives by `restyle.models.torchscript`.
The tokenizer is CLIP's BPE: restyle's copy of the published files, the `clip` package's
`bpe_simple_vocab_16e6.txt.gz`, or a CLIP / CLIPSeg folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from restyle.models.clip_bpe import read_merges, write_clip_tokenizer
from restyle.models.tiny import CLIPSEG_MEAN, CLIPSEG_RD64_REFINED, CLIPSEG_STD
from restyle.models.torchscript import is_torchscript, read_torchscript_state

ORIGINAL_HEADS = 4  # nn.TransformerEncoderLayer(d_model=reduce_dim, nhead=4) in the original decoder
ORIGINAL_EXTRACT_LAYERS = (3, 6, 9)
CLIPSEG_INPUT_SIZE = 352  # the resolution CLIPSeg was trained at
CLIP_WHAT = (
    "OpenAI's ViT-B-16.pt (the clip package keeps it in ~/.cache/clip) or a transformers CLIPModel folder"
)
TOKENIZER_WHAT = "a CLIP or CLIPSeg folder, or the clip package's bpe_simple_vocab_16e6.txt.gz"

_DECODER_RULES = [
    (r"^film_(mul|add)\.", r"decoder.film_\1."),
    (r"^reduces\.(\d+)\.", r"decoder.reduces.\1."),
    (r"^blocks\.(\d+)\.self_attn\.out_proj\.", r"decoder.layers.\1.self_attn.out_proj."),
    (r"^blocks\.(\d+)\.linear1\.", r"decoder.layers.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.linear2\.", r"decoder.layers.\1.mlp.fc2."),
    (r"^blocks\.(\d+)\.norm1\.", r"decoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"decoder.layers.\1.layer_norm2."),
    (r"^trans_conv\.", r"decoder.transposed_convolution."),
]
_DECODER_SKIP = re.compile(r"^(reduce\.|clip_model\.|model\.)")  # unused by the forward pass / CLIP itself

_CLIP_RULES = [
    (r"^visual\.class_embedding$", "vision_model.embeddings.class_embedding"),
    (r"^visual\.positional_embedding$", "vision_model.embeddings.position_embedding.weight"),
    (r"^visual\.conv1\.weight$", "vision_model.embeddings.patch_embedding.weight"),
    (r"^visual\.ln_pre\.", "vision_model.pre_layrnorm."),
    (r"^visual\.ln_post\.", "vision_model.post_layernorm."),
    (r"^visual\.transformer\.resblocks\.(\d+)\.", r"vision_model.encoder.layers.\1."),
    (r"^transformer\.resblocks\.(\d+)\.", r"text_model.encoder.layers.\1."),
    (r"^token_embedding\.weight$", "text_model.embeddings.token_embedding.weight"),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"^logit_scale$", "logit_scale"),
]
_LAYER_RULES = [  # inside one residual block
    (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]


def _split_in_proj(key: str, value: Any, out: dict[str, Any], prefix: str) -> None:
    """nn.MultiheadAttention's packed in_proj (3D, D) -> q/k/v projections."""
    kind = "weight" if key.endswith("in_proj_weight") else "bias"
    for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
        out[f"{prefix}self_attn.{name}.{kind}"] = part.clone()


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, repl in rules:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def convert_decoder_state(state: dict[str, Any]) -> dict[str, Any]:
    """Original decoder keys -> CLIPSegForImageSegmentation keys (under `decoder.`)."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state.items():
        if _DECODER_SKIP.match(key):
            continue
        m = re.match(r"^blocks\.(\d+)\.self_attn\.in_proj_(weight|bias)$", key)
        if m:
            _split_in_proj(key, value, out, f"decoder.layers.{m.group(1)}.")
            continue
        new = _rename(key, _DECODER_RULES)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ModelLoadError(f"decoder: unexpected keys for a CLIPSeg decoder: {', '.join(unknown[:8])}")
    return out


def convert_openai_clip_state(state: dict[str, Any]) -> dict[str, Any]:
    """OpenAI CLIP state dict -> transformers CLIPModel keys."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        # metadata OpenAI's build_model drops; attn_mask is the text causal mask, a tensor attribute (not a
        # weight) that a scripted (rather than traced) CLIP archive keeps
        if key in {"input_resolution", "context_length", "vocab_size"} or key.endswith(".attn_mask"):
            continue
        if key in {"visual.proj", "text_projection"}:
            out["visual_projection.weight" if key == "visual.proj" else "text_projection.weight"] = value.t()
            continue
        new = _rename(key, _CLIP_RULES)
        if new is None:
            raise ModelLoadError(f"clip: unexpected key {key!r} for an OpenAI CLIP state dict")
        m = re.match(r"^(.*layers\.\d+\.)attn\.in_proj_(weight|bias)$", new)
        if m:
            _split_in_proj(new, value, out, m.group(1))
            continue
        out[_rename(new, _LAYER_RULES) or new] = value
    return out


def openai_clip_configs(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(text_config, vision_config, projection_dim) read off an OpenAI CLIP state dict's shapes."""
    v_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]

    def layers(prefix: str) -> int:
        return len({k.split(".")[len(prefix.split("."))] for k in state if k.startswith(prefix + ".")}) or 0

    vision = dict(
        hidden_size=v_width,
        intermediate_size=4 * v_width,
        num_attention_heads=max(1, v_width // 64),
        num_hidden_layers=layers("visual.transformer.resblocks"),
        patch_size=patch,
        image_size=patch * grid,
    )
    text = dict(
        hidden_size=t_width,
        intermediate_size=4 * t_width,
        num_attention_heads=max(1, t_width // 64),
        num_hidden_layers=layers("transformer.resblocks"),
        vocab_size=state["token_embedding.weight"].shape[0],
        max_position_embeddings=state["positional_embedding"].shape[0],
    )
    return text, vision, state["text_projection"].shape[1]


def decoder_config(state: dict[str, Any]) -> dict[str, Any]:
    """CLIPSegConfig fields read off an original decoder state dict."""
    reduce_dim = state["film_mul.weight"].shape[0]
    complex_conv = "trans_conv.0.weight" in state
    return dict(
        reduce_dim=reduce_dim,
        decoder_intermediate_size=state["blocks.0.linear1.weight"].shape[0],
        decoder_num_attention_heads=ORIGINAL_HEADS,
        decoder_hidden_act="relu",  # nn.TransformerEncoderLayer's default activation
        use_complex_transposed_convolution=complex_conv,
        conditional_layer=0,
    )


def _require(state: dict[str, Any], keys: tuple[str, ...], field: str, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ModelLoadError(f"{field}: not {what} (missing {missing[0]!r})", field=field)


def _load_file(path: Path, field: str) -> dict[str, Any]:
    """A state dict from a `torch.save` file or a TorchScript archive (OpenAI's CLIP), running no code."""
    import torch

    if not path.is_file():
        raise InvalidParameterError(f"{field}: no such file: {path}", field=field)
    if is_torchscript(path):
        return read_torchscript_state(path, field)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-state-dict files
        raise ModelLoadError(
            f"{field}: {path} is not a plain state dict loadable with weights_only=True ({err}). For CLIP, "
            f"pass --clip {CLIP_WHAT}.",
            field=field,
        ) from err
    if not isinstance(state, dict):
        raise ModelLoadError(f"{field}: {path} holds a {type(state).__name__}, not a state dict", field=field)
    return state.get("state_dict", state)


def _load_pretrained(cls: Any, model_id: str, field: str, what: str) -> Any:
    """`cls.from_pretrained` from a folder or the hub cache, with errors naming this command's own flag."""
    from restyle.models.hub import live_id, load_pretrained, names_a_folder

    flag = "--" + field.replace("_", "-")
    path = Path(model_id).expanduser()
    if not path.is_dir() and names_a_folder(model_id):
        raise ModelNotFoundError(
            f"{field}: no such file or folder: {path}; point {flag} at {what}", field=field
        )
    try:
        return load_pretrained(cls, model_id, "segmenter")
    except ModelNotFoundError as err:
        raise ModelNotFoundError(
            f"{field}: '{model_id}' is not a file or folder here, nor in the Hugging Face cache; point "
            f"{flag} at {what}, or fetch it where the hub is reachable with `hf download {live_id(model_id)} "
            "--exclude '*.h5' --exclude '*.msgpack'`",
            field=field,
        ) from err
    except ModelLoadError as err:
        raise ModelLoadError(
            f"{field}: '{model_id}' does not load as {what}: {err.__cause__ or err}", field=field
        ) from err


def _openai_clip(path: Path) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any]]:
    """(text_config, vision_config, projection_dim, transformers state) from an OpenAI CLIP file."""
    raw = _load_file(path, "clip")
    _require(
        raw,
        (
            "visual.conv1.weight",
            "visual.positional_embedding",
            "ln_final.weight",
            "token_embedding.weight",
            "positional_embedding",
            "text_projection",
        ),
        "clip",
        "an OpenAI CLIP state dict",
    )
    text_cfg, vision_cfg, proj = openai_clip_configs(raw)
    return text_cfg, vision_cfg, proj, convert_openai_clip_state(raw)


def _tokenizer(processor_from: str | None, clip: str, clip_is_file: bool) -> Any:
    """CLIP's BPE tokenizer: from `processor_from` (folder, hub id or BPE file), the CLIP folder, or the
    published CLIPSeg tokenizer files restyle ships (what CIDAS/clipseg-* use) for an OpenAI file."""
    import tempfile

    from transformers import AutoTokenizer, CLIPTokenizer

    if processor_from is None and not clip_is_file:
        return _load_pretrained(AutoTokenizer, clip, "clip", CLIP_WHAT)
    merges = None
    if processor_from is not None:
        if not Path(processor_from).expanduser().is_file():
            return _load_pretrained(AutoTokenizer, processor_from, "processor_from", TOKENIZER_WHAT)
        merges = read_merges(processor_from, "processor_from")  # bpe_simple_vocab_16e6.txt.gz, merges.txt
    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp, CLIPSEG_RD64_REFINED, merges))


def convert_clipseg(
    decoder: str | Path,
    clip: str | Path,
    out: str | Path,
    *,
    processor_from: str | None = None,
    extract_layers: tuple[int, ...] = ORIGINAL_EXTRACT_LAYERS,
    image_size: int = CLIPSEG_INPUT_SIZE,
) -> Path:
    """Write a transformers CLIPSeg folder from the original decoder weights and CLIP ViT-B/16.

    Args:
        decoder: `rd64-uni.pth` / `rd64-uni-refined.pth` (or a decoder state dict in that layout).
        clip: OpenAI's `ViT-B-16.pt` (TorchScript) or an OpenAI-layout state-dict file, or a transformers
            CLIPModel folder / hub id.
        out: output folder.
        processor_from: where the tokenizer comes from: a CLIP / CLIPSeg folder or hub id, or a CLIP BPE
            file (the clip package's `bpe_simple_vocab_16e6.txt.gz`, or a `merges.txt`). Default: the
            `clip` folder; for a `clip` file, restyle's copy of the published CLIP BPE files.
        extract_layers: vision layers the decoder reads (the released models use 3, 6, 9).
        image_size: the processor's input side (352 for the released models).

    Returns:
        The output folder, loadable with `--segmenter`.
    """
    import torch
    from transformers import (
        CLIPModel,
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        ViTImageProcessor,
    )

    dec_state = _load_file(Path(decoder), "decoder")
    _require(
        dec_state, ("film_mul.weight", "blocks.0.linear1.weight"), "decoder", "a CLIPSeg decoder state dict"
    )
    clip_path = Path(str(clip)).expanduser()
    if clip_path.suffix in {".pt", ".pth", ".bin", ".safetensors"} and not clip_path.is_file():
        raise InvalidParameterError(f"clip: no such file: {clip_path}", field="clip")
    if clip_path.is_file():
        text_cfg, vision_cfg, proj, clip_state = _openai_clip(clip_path)
    else:
        clip_model = _load_pretrained(CLIPModel, str(clip), "clip", CLIP_WHAT)
        text_cfg, vision_cfg = (
            clip_model.config.text_config.to_dict(),
            clip_model.config.vision_config.to_dict(),
        )
        proj, clip_state = clip_model.config.projection_dim, clip_model.state_dict()
    tokenizer = _tokenizer(processor_from, str(clip), clip_path.is_file())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        text_cfg.setdefault(key, getattr(tokenizer, key))
    config = CLIPSegConfig(
        text_config=text_cfg,
        vision_config=vision_cfg,
        projection_dim=proj,
        extract_layers=list(extract_layers),
        **decoder_config(dec_state),
    )
    model = CLIPSegForImageSegmentation(config).eval()
    state = {f"clip.{k}": v for k, v in clip_state.items()} | convert_decoder_state(dec_state)
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(
            f"convert-clipseg: weights do not fit: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    image_processor = ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=list(CLIPSEG_MEAN),
        image_std=list(CLIPSEG_STD),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
