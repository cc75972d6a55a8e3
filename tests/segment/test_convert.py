"""convert_clipseg against an independent plain-torch re-implementation of the original CLIPSeg.

The reference below follows timojl/clipseg (models/clipseg.py) and OpenAI CLIP's module layout; it shares
no key mapping with restyle.segment.convert. Tiny random weights, no network.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from restyle.errors import InvalidParameterError, ModelLoadError
from restyle.segment.convert import convert_clipseg

WIDTH, EMBED, REDUCE, CTX, EXTRACT = 128, 32, 16, 77, (1, 2)


class ResBlock(nn.Module):  # OpenAI CLIP ResidualAttentionBlock (sequence-first)
    def __init__(self, w: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(w, w // 64)
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(w, 4 * w), gelu=QuickGELU(), c_proj=nn.Linear(4 * w, w))
        )

    def forward(self, x, mask=None):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Transformer(nn.Module):
    def __init__(self, w: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResBlock(w) for _ in range(layers))


class Visual(nn.Module):
    def __init__(self, patch: int, grid: int, layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTH, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(WIDTH))
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, WIDTH))
        self.ln_pre, self.ln_post = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.transformer = Transformer(WIDTH, layers)
        self.proj = nn.Parameter(torch.randn(WIDTH, EMBED))


class OpenAIClip(nn.Module):
    def __init__(self, patch: int, grid: int, vocab: int) -> None:
        super().__init__()
        self.visual = Visual(patch, grid, layers=3)
        self.token_embedding = nn.Embedding(vocab, WIDTH)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, WIDTH))
        self.transformer = Transformer(WIDTH, 2)
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.randn(WIDTH, EMBED))
        self.logit_scale = nn.Parameter(torch.tensor(4.6))


class OriginalDecoder(nn.Module):  # what rd64-uni(-refined).pth holds
    def __init__(self, patch: int, refined: bool) -> None:
        super().__init__()
        self.film_mul, self.film_add = nn.Linear(EMBED, REDUCE), nn.Linear(EMBED, REDUCE)
        self.reduce = nn.Linear(WIDTH, REDUCE)  # unused by the forward pass, present in the release
        self.reduces = nn.ModuleList(nn.Linear(WIDTH, REDUCE) for _ in EXTRACT)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(REDUCE, nhead=4, dim_feedforward=32) for _ in EXTRACT
        )
        k = patch // 4
        self.trans_conv = (
            nn.Sequential(
                nn.Conv2d(REDUCE, REDUCE, 3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(REDUCE, REDUCE // 2, k, stride=k),
                nn.ReLU(),
                nn.ConvTranspose2d(REDUCE // 2, 1, k, stride=k),
            )
            if refined
            else nn.ConvTranspose2d(REDUCE, 1, patch, stride=patch)
        )


def encode_text(clip: OpenAIClip, ids: torch.Tensor) -> torch.Tensor:
    x = (clip.token_embedding(ids) + clip.positional_embedding[: ids.shape[1]]).permute(1, 0, 2)
    causal = torch.full((ids.shape[1],) * 2, float("-inf")).triu(1)
    for block in clip.transformer.resblocks:
        x = block(x, causal)
    x = clip.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ clip.text_projection


def visual_activations(v: Visual, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    x = v.conv1(pixels).flatten(2).permute(0, 2, 1)
    cls = v.class_embedding.expand(len(x), 1, -1)
    x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding).permute(1, 0, 2)  # LND
    acts = []
    for i, block in enumerate(v.transformer.resblocks):
        x = block(x)
        if i in layers:
            acts.append(x)
    return acts


@torch.no_grad()
def reference_logits(clip, dec, pixels, ids) -> torch.Tensor:
    cond = encode_text(clip, ids)
    acts = visual_activations(clip.visual, pixels, [0, *EXTRACT])[1:]
    a = None
    for i, (act, block, reduce) in enumerate(zip(acts[::-1], dec.blocks, dec.reduces)):
        a = reduce(act) if a is None else reduce(act) + a
        if i == 0:
            a = dec.film_mul(cond) * a + dec.film_add(cond)
        a = block(a)
    a = a[1:].permute(1, 2, 0)
    side = round(a.shape[2] ** 0.5)
    return dec.trans_conv(a.reshape(len(pixels), REDUCE, side, side))


def _randomise(module: nn.Module) -> nn.Module:
    """No zero biases nor unit norms: a swapped or dropped tensor must change the output."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from restyle.models.tiny import build_tiny_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer().save_pretrained(out)
    return out


def _checkpoint(tmp_path, tokenizer_dir, *, refined=False, patch=8, grid=4):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    clip = _randomise(OpenAIClip(patch, grid, len(AutoTokenizer.from_pretrained(tokenizer_dir))))
    dec = _randomise(OriginalDecoder(patch, refined))
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    torch.save(dec.state_dict(), tmp_path / "rd16-uni.pth")
    return clip, dec


def _convert(tmp_path, tokenizer_dir, **kwargs):
    kwargs = {"processor_from": str(tokenizer_dir), "extract_layers": EXTRACT, "image_size": 32} | kwargs
    return convert_clipseg(tmp_path / "rd16-uni.pth", tmp_path / "clip.pt", tmp_path / "out", **kwargs)


@pytest.mark.parametrize(("refined", "patch", "grid"), [(False, 8, 4), (True, 16, 2)])
def test_converted_logits_match_original(tmp_path, tokenizer_dir, refined, patch, grid):
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    clip, dec = _checkpoint(tmp_path, tokenizer_dir, refined=refined, patch=patch, grid=grid)
    out = _convert(tmp_path, tokenizer_dir)
    model = CLIPSegForImageSegmentation.from_pretrained(out).eval()
    processor = CLIPSegProcessor.from_pretrained(out)
    assert model.config.use_complex_transposed_convolution is refined
    texts = ["a red dress", "hat"]
    tokens = processor(text=texts, padding=True, return_tensors="pt")
    pixels = torch.randn(len(texts), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(pixel_values=pixels, **tokens).logits
    ids = torch.zeros(len(texts), CTX, dtype=torch.long)  # the original pads to 77 with zeros
    for row, (tok, keep) in enumerate(zip(tokens["input_ids"], tokens["attention_mask"])):
        ids[row, : int(keep.sum())] = tok[keep.bool()]
    want = reference_logits(clip, dec, pixels, ids).squeeze(1)
    assert got.shape == want.shape == (2, 32, 32)
    assert want.std() > 1e-2  # not a degenerate constant map
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_converted_folder_runs_in_the_segmenter(tmp_path, tokenizer_dir):
    from restyle.segment import MaskParams
    from restyle.segment.clipseg import ClipSegSegmenter

    _checkpoint(tmp_path, tokenizer_dir)
    seg = ClipSegSegmenter.from_pretrained(str(_convert(tmp_path, tokenizer_dir)), device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    logits = seg.logits(image, ["a dress"])
    assert logits.shape == (1, 40, 56) and np.isfinite(logits).all()
    res = seg.segment(image, "a dress", params=MaskParams(threshold=0.0, protect=()))
    assert res.mask.size == image.size and res.area > 0


def test_unexpected_decoder_key_is_named(tmp_path, tokenizer_dir):
    _, dec = _checkpoint(tmp_path, tokenizer_dir)
    torch.save(dec.state_dict() | {"mystery.weight": torch.zeros(2)}, tmp_path / "rd16-uni.pth")
    with pytest.raises(ModelLoadError, match=r"mystery\.weight"):
        _convert(tmp_path, tokenizer_dir)


def test_missing_decoder_file(tmp_path, tokenizer_dir):
    _checkpoint(tmp_path, tokenizer_dir)
    (tmp_path / "rd16-uni.pth").unlink()
    with pytest.raises(InvalidParameterError, match="no such file") as err:
        _convert(tmp_path, tokenizer_dir)
    assert err.value.field == "decoder"


class Pickled:  # a custom class: weights_only=True refuses to unpickle it
    pass


@pytest.mark.parametrize("which", ["rd16-uni.pth", "clip.pt"])
@pytest.mark.parametrize("content", ["object", "garbage", "list"])
def test_files_that_are_not_state_dicts(tmp_path, tokenizer_dir, which, content):
    _checkpoint(tmp_path, tokenizer_dir)
    target = tmp_path / which
    if content == "garbage":
        target.write_bytes(b"\x00not a torch file\xff" * 10)
    else:
        torch.save(Pickled() if content == "object" else [torch.zeros(1)], target)
    with pytest.raises(ModelLoadError, match="not a state dict|not a plain state dict"):
        _convert(tmp_path, tokenizer_dir)


def test_openai_clip_needs_processor_from(tmp_path, tokenizer_dir):
    _checkpoint(tmp_path, tokenizer_dir)
    with pytest.raises(InvalidParameterError, match="processor") as err:
        _convert(tmp_path, tokenizer_dir, processor_from=None)
    assert err.value.field == "processor_from"
    assert not (tmp_path / "out").exists()


def test_swapped_or_mistyped_files_are_named(tmp_path):
    dec = tmp_path / "dec.pth"
    torch.save({"film_mul.weight": torch.zeros(2, 2), "blocks.0.linear1.weight": torch.zeros(2, 2)}, dec)
    with pytest.raises(ModelLoadError, match="clip: not an OpenAI CLIP state dict"):
        convert_clipseg(dec, dec, tmp_path / "out")
    with pytest.raises(InvalidParameterError, match="clip: no such file"):
        convert_clipseg(dec, tmp_path / "missing.pt", tmp_path / "out")
    clip_like = tmp_path / "clip.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, clip_like)
    with pytest.raises(ModelLoadError, match="decoder: not a CLIPSeg decoder state dict"):
        convert_clipseg(clip_like, clip_like, tmp_path / "out")
