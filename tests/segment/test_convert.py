"""convert_clipseg against an independent plain-torch re-implementation of the original CLIPSeg.

The reference below follows timojl/clipseg (models/clipseg.py) and OpenAI CLIP's module layout; it shares
no key mapping with restyle.segment.convert. Tiny random weights, no network. OpenAI publishes CLIP as a
TorchScript archive (`ViT-B-16.pt`, traced, fp16); `torchscript` below builds one the same way.
"""

import gzip
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from restyle.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from restyle.segment.convert import convert_clipseg

WIDTH, EMBED, REDUCE, CTX, EXTRACT = 128, 32, 16, 77, (1, 2)
PROMPT = "a red floral maxi dress"
PROMPT_IDS = [49406, 320, 736, 10732, 23266, 2595, 49407]  # CLIP's BPE (the published vocab.json/merges.txt)


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


class TracedClip(OpenAIClip):
    """What torch.jit.trace needs: a forward. Tracing keeps every parameter, under the same names."""

    def forward(self, x):
        return x * self.logit_scale


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


def _checkpoint(tmp_path, tokenizer_dir, *, refined=False, patch=8, grid=4, clip_format="state_dict"):
    """Write clip.pt (a state dict, or a TorchScript archive as OpenAI ships it) and rd16-uni.pth.

    Returns the CLIP module with the weights as stored (fp16-rounded for "torchscript_fp16") and the decoder.
    """
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    clip = _randomise(TracedClip(patch, grid, len(AutoTokenizer.from_pretrained(tokenizer_dir))))
    dec = _randomise(OriginalDecoder(patch, refined))
    if clip_format == "state_dict":
        torch.save(clip.state_dict(), tmp_path / "clip.pt")
    else:
        stored = clip.half() if clip_format == "torchscript_fp16" else clip
        example = torch.ones(2, dtype=next(stored.parameters()).dtype)
        torch.jit.trace(stored, example).save(str(tmp_path / "clip.pt"))
        clip = stored.float()
    torch.save(dec.state_dict(), tmp_path / "rd16-uni.pth")
    return clip, dec


def _convert(tmp_path, tokenizer_dir, **kwargs):
    kwargs = {"processor_from": str(tokenizer_dir), "extract_layers": EXTRACT, "image_size": 32} | kwargs
    return convert_clipseg(tmp_path / "rd16-uni.pth", tmp_path / "clip.pt", tmp_path / "out", **kwargs)


@pytest.fixture
def no_jit_load(monkeypatch):
    """torch.jit.load runs an archive's code: the converter must never call it."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)


@pytest.mark.parametrize(
    ("refined", "patch", "grid", "clip_format"),
    [
        (False, 8, 4, "state_dict"),
        (True, 16, 2, "state_dict"),
        (False, 8, 4, "torchscript"),
        (True, 16, 2, "torchscript_fp16"),  # as OpenAI's ViT-B-16.pt: traced, fp16 weights
    ],
)
def test_converted_logits_match_original(
    tmp_path, tokenizer_dir, no_jit_load, refined, patch, grid, clip_format
):
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    clip, dec = _checkpoint(
        tmp_path, tokenizer_dir, refined=refined, patch=patch, grid=grid, clip_format=clip_format
    )
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


def _tokenizer_of(folder):
    from transformers import CLIPSegProcessor

    return CLIPSegProcessor.from_pretrained(folder).tokenizer


def test_openai_clip_without_processor_from_uses_the_published_clip_bpe(tmp_path, tokenizer_dir):
    """No hub: the tokenizer is restyle's copy of the published CLIP BPE files (CIDAS/clipseg-* use it)."""
    _checkpoint(tmp_path, tokenizer_dir, clip_format="torchscript")
    tokenizer = _tokenizer_of(_convert(tmp_path, tokenizer_dir, processor_from=None))
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == CTX
    assert tokenizer(PROMPT).input_ids == PROMPT_IDS
    assert len(tokenizer(PROMPT * 40, truncation=True).input_ids) == CTX


def _clip_package_bpe(path):
    """A file laid out as the clip package's bpe_simple_vocab_16e6.txt.gz: its version line, the merges
    CLIP uses, then more merges (the real file has 262,144) that CLIP never reads."""
    from restyle.models.clip_bpe import CLIP_BPE_MERGES, read_merges

    lines = [
        '"bpe_simple_vocab_16e6.txt#version: 0.2',
        *read_merges(CLIP_BPE_MERGES),
        "qqqqqqq xxxxxxx",
        "xxxxxxx qqqqqqq",
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    return path


def test_processor_from_the_clip_packages_bpe_file(tmp_path, tokenizer_dir):
    _checkpoint(tmp_path, tokenizer_dir, clip_format="torchscript")
    bpe = _clip_package_bpe(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    out = _convert(tmp_path, tokenizer_dir, processor_from=str(bpe))
    tokenizer = _tokenizer_of(out)
    assert len(tokenizer) == 49408 and tokenizer(PROMPT).input_ids == PROMPT_IDS
    assert "qqqqqqqxxxxxxx" not in tokenizer.get_vocab()  # merges past CLIP's 48,894 are not read


@pytest.mark.parametrize(
    "content",
    [b"not gzip, not merges", gzip.compress(b"#version\na b\nc d\n"), b"\xff\xfe\x00"],
    ids=["text", "too-few-merges", "not-utf8"],
)
def test_processor_from_a_file_that_is_not_a_clip_bpe(tmp_path, tokenizer_dir, content):
    _checkpoint(tmp_path, tokenizer_dir)
    (tmp_path / "bpe.txt.gz").write_bytes(content)
    with pytest.raises(InvalidParameterError, match="not a CLIP BPE file") as err:
        _convert(tmp_path, tokenizer_dir, processor_from=str(tmp_path / "bpe.txt.gz"))
    assert err.value.field == "processor_from"
    assert not (tmp_path / "out").exists()


def test_missing_clip_model_names_the_clip_flag_and_a_clip_only_download(
    tmp_path, tokenizer_dir, empty_hf_cache
):
    _checkpoint(tmp_path, tokenizer_dir)
    with pytest.raises(ModelNotFoundError) as err:
        convert_clipseg(tmp_path / "rd16-uni.pth", "openai/clip-vit-base-patch16", tmp_path / "out")
    msg = str(err.value)
    assert err.value.field == "clip" and "--clip" in msg and "ViT-B-16.pt" in msg
    assert "`hf download openai/clip-vit-base-patch16" in msg  # the CLIP model alone, not an inpainter too
    assert "--segmenter" not in msg and "CLIPSeg folder" not in msg and "restyle models pull" not in msg
    assert "\n" not in msg


def test_missing_processor_from_names_its_flag(tmp_path, tokenizer_dir, empty_hf_cache):
    _checkpoint(tmp_path, tokenizer_dir)
    with pytest.raises(ModelNotFoundError) as err:
        _convert(tmp_path, tokenizer_dir, processor_from="openai/clip-vit-base-patch32")
    assert err.value.field == "processor_from" and "--processor-from" in str(err.value)
    assert "--segmenter" not in str(err.value)
    with pytest.raises(ModelNotFoundError, match="processor_from: no such file or folder"):
        _convert(tmp_path, tokenizer_dir, processor_from=str(tmp_path / "no-tokenizer-here"))


def test_clip_folder_that_is_not_a_clip_model_names_the_clip_flag(tmp_path, tokenizer_dir):
    _checkpoint(tmp_path, tokenizer_dir)
    (tmp_path / "not-clip").mkdir()
    with pytest.raises(ModelLoadError, match="clip: .* does not load as OpenAI's ViT-B-16.pt") as err:
        convert_clipseg(tmp_path / "rd16-uni.pth", tmp_path / "not-clip", tmp_path / "out")
    assert err.value.field == "clip" and "--segmenter" not in str(err.value)


class RunsCode:
    def __reduce__(self):
        import os

        return os.system, (f"touch {self.sentinel}",)


def _hostile_archive(path, sentinel):
    """A zip laid out as TorchScript (data.pkl, constants.pkl, code/) whose data.pkl calls os.system."""
    evil = RunsCode()
    evil.sentinel = sentinel
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ViT-B-16/data.pkl", pickle.dumps({"visual.proj": evil}, protocol=2))
        zf.writestr("ViT-B-16/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("ViT-B-16/code/__torch__/model.py", "import os\nos.system('touch x')\n")
        zf.writestr("ViT-B-16/version", "3\n")


def test_torchscript_archive_is_read_without_running_anything(tmp_path, tokenizer_dir, no_jit_load):
    _checkpoint(tmp_path, tokenizer_dir)
    sentinel = tmp_path / "code-ran"
    _hostile_archive(tmp_path / "clip.pt", sentinel)
    with pytest.raises(ModelLoadError, match=r"clip: .*TorchScript.*refusing (posix|os)\.system") as err:
        _convert(tmp_path, tokenizer_dir)
    assert err.value.field == "clip"
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_torchscript_reader_matches_torch_state_dict(tmp_path, tokenizer_dir):
    """Every tensor, dtype and value as torch.jit.load(...).state_dict() gives them (the oracle, run here)."""
    from restyle.models.torchscript import is_torchscript, read_torchscript_state

    _checkpoint(tmp_path, tokenizer_dir, clip_format="torchscript_fp16")
    want = torch.jit.load(str(tmp_path / "clip.pt")).state_dict()
    got = read_torchscript_state(tmp_path / "clip.pt", "clip")
    assert is_torchscript(tmp_path / "clip.pt") and not is_torchscript(tmp_path / "rd16-uni.pth")
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype == torch.float16 and torch.equal(got[key], value), key


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
