"""The tiny models differ from the published ones only in their weights.

Samplers resolve from the published scheduler config as they do with real weights, the tokenizers are
CLIP's BPE as published (ids, 77-token truncation, padding, diffusers' truncation warning), and the tiny
CLIPSeg takes 352-pixel inputs on a 224 vision config with the refined decoder head, as
CIDAS/clipseg-rd64-refined does.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

import restyle.models
from restyle.inpaint.params import SCHEDULERS
from restyle.samples import ORIGINAL_PROMPT

PUBLISHED = Path(restyle.models.__path__[0]) / "published"
# SHA-256 of the published files (checked byte for byte against the snapshots named in published/SOURCES.md)
PUBLISHED_SHA256 = {
    "clipseg-rd64-refined/config.json": "1d724ab4fd76ac95e9ae0cf23b2382545410a7f6171e7e44687e61c1160a8218",
    "clipseg-rd64-refined/preprocessor_config.json": (
        "75f49fd1e11777698a87e57e4e72d9396a54944fa908df3a0edb84dcf2c1efde"
    ),
    "clipseg-rd64-refined/preprocessor_config.legacy.json": (
        "ba4126cbc9c127b4a2df1e90ef30bd209774ce83297c0b107a42d2ee4ecf31ed"
    ),
    "clipseg-rd64-refined/special_tokens_map.json": (
        "c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac"
    ),
    "clipseg-rd64-refined/tokenizer_config.json": (
        "00439066fcba73de57644cf41e4e3b9f2dbb09d7f3fc2005898ba52399045882"
    ),
    "sd15-inpainting/scheduler/scheduler_config.json": (
        "8b457848b74deeeab2a967b75048dd2cb6f393cfc17751eca1b5ec655cff0183"
    ),
    "sd2-inpainting/feature_extractor/preprocessor_config.json": (
        "2a1da83b5e1032aaeef397552ddb408dca0d8cd1dc58f61bf6abf38d6f33a0a2"
    ),
    "sd2-inpainting/model_index.json": "af482af150c3f493066861bdf1b5208a35ed15e530c1fb6eb144c85e42a1114c",
    "sd2-inpainting/scheduler/scheduler_config.json": (
        "7a8564e9760e67ab1bea23709a1f24f4008c88535f149d0ef637e3d51556189d"
    ),
    "sd2-inpainting/text_encoder/config.json": (
        "defee35258ea6821568d9dffbc63edb3eb7c194d83f147b087f733897547f024"
    ),
    "sd2-inpainting/tokenizer/special_tokens_map.json": (
        "f118ab3a983206e4f32583448de6bd6aae4ee21869135cef1f5848a753cdaab6"
    ),
    "sd2-inpainting/tokenizer/tokenizer_config.json": (
        "5791be2e5ba26a0be4ac7d952f0daf382401394ab36886a8158fe52e39ea6226"
    ),
}
VOCAB_SHA256 = "e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"  # the repos' vocab.json
MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"  # and merges.txt
FASHION = ORIGINAL_PROMPT  # the original design's example prompt: 165 characters, 36 CLIP tokens
FASHION_IDS = [  # what the published vocab.json + merges.txt give
    49406, 320, 3970, 1994, 268, 2863, 9773, 530, 320, 10129, 1538, 6561, 12386, 267, 593, 1476, 1774,
    10130, 267, 4852, 5389, 267, 1153, 16157, 267, 1400, 3027, 267, 5302, 12609, 267, 11124, 267, 8157,
    4353, 49407,
]  # fmt: skip
LONG = ", ".join([FASHION] * 3)  # 104 tokens: past CLIP's 77
# What `from_config` makes of the published PNDM (SD 2) / DDIM (SD 1.5) configs, which name no spacing
RESOLVED = {
    "euler": {"timestep_spacing": "linspace"},
    "euler_a": {"timestep_spacing": "linspace"},
    "dpm++": {"timestep_spacing": "linspace"},
    "dpm++_karras": {"timestep_spacing": "linspace", "use_karras_sigmas": True},
    "ddim": {"timestep_spacing": "leading", "clip_sample": False, "set_alpha_to_one": False},
    "unipc": {"timestep_spacing": "linspace"},
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _published_scheduler(repo: str):
    """The scheduler as the pipeline loader builds it from a repo's scheduler/scheduler_config.json."""
    import diffusers

    folder = PUBLISHED / repo / "scheduler"
    name = json.loads((folder / "scheduler_config.json").read_text())["_class_name"]
    return getattr(diffusers, name).from_pretrained(folder)


def _resolve(base, sampler: str):
    import diffusers

    cls, overrides = SCHEDULERS[sampler]
    return getattr(diffusers, cls).from_config(base.config, **overrides)


def _published_tokenizer(folder, tmp_path):
    from transformers import CLIPTokenizer

    from restyle.models.clip_bpe import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok", folder))


def test_published_files_are_the_published_bytes(tmp_path):
    from restyle.models.clip_bpe import write_clip_tokenizer

    original = {"sd2-inpainting", "sd15-inpainting", "clipseg-rd64-refined"}  # the others: their own tests
    stored = {
        str(p.relative_to(PUBLISHED)): _sha256(p)
        for p in PUBLISHED.rglob("*.json")
        if p.relative_to(PUBLISHED).parts[0] in original
    }
    assert stored == PUBLISHED_SHA256
    tok = write_clip_tokenizer(tmp_path, PUBLISHED / "clipseg-rd64-refined")
    assert (_sha256(tok / "vocab.json"), _sha256(tok / "merges.txt")) == (VOCAB_SHA256, MERGES_SHA256)


def test_tiny_models_hold_the_published_files(tiny_models):
    inp, seg = tiny_models["inpainter"], tiny_models["segmenter"]
    for name in (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "feature_extractor/preprocessor_config.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ):
        assert _sha256(inp / name) == PUBLISHED_SHA256[f"sd2-inpainting/{name}"], name
    for name in ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert _sha256(seg / name) == PUBLISHED_SHA256[f"clipseg-rd64-refined/{name}"], name
    for folder in (inp / "tokenizer", seg):
        assert (_sha256(folder / "vocab.json"), _sha256(folder / "merges.txt")) == (
            VOCAB_SHA256,
            MERGES_SHA256,
        )


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_every_sampler_resolves_as_with_the_published_scheduler(inpainter, sampler):
    inpainter.adapter.set_sampler(sampler)  # what Inpainter.run switches to
    tiny = inpainter.pipe.scheduler
    real = _resolve(_published_scheduler("sd2-inpainting"), sampler)
    assert type(tiny) is type(real)
    tiny_cfg, real_cfg = dict(tiny.config), dict(real.config)
    differ = {k: (tiny_cfg.get(k), real_cfg.get(k)) for k in tiny_cfg.keys() | real_cfg.keys()}
    assert {k: v for k, v in differ.items() if v[0] != v[1]} == {}
    assert {k: real_cfg[k] for k in RESOLVED[sampler]} == RESOLVED[sampler]
    assert real_cfg["steps_offset"] == 1
    tiny.set_timesteps(25)
    real.set_timesteps(25)
    assert torch.equal(tiny.timesteps, real.timesteps)


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_sd15_resolves_every_sampler_as_sd2(sampler):
    """SD 1.5's DDIM config and SD 2's PNDM one resolve alike: the SD 2-based tiny model stands for both."""
    sd2 = dict(_resolve(_published_scheduler("sd2-inpainting"), sampler).config)
    sd15 = dict(_resolve(_published_scheduler("sd15-inpainting"), sampler).config)
    sd2.pop("_diffusers_version"), sd15.pop("_diffusers_version")
    assert sd2 == sd15


def test_sd_scheduler_constant_is_euler_as_published():
    from diffusers import EulerDiscreteScheduler

    from restyle.models.tiny import SD_SCHEDULER

    mine = EulerDiscreteScheduler(**SD_SCHEDULER)
    real = _resolve(_published_scheduler("sd2-inpainting"), "euler")
    own = set(mine.config) - {"_use_default_values", "_diffusers_version", "_class_name"}
    assert {k: mine.config[k] for k in own} == {k: real.config[k] for k in own}
    mine.set_timesteps(25)
    real.set_timesteps(25)
    assert torch.equal(mine.timesteps, real.timesteps)


def _tokenizers(inpainter, segmenter):
    return {"inpainter": inpainter.pipe.tokenizer, "segmenter": segmenter.processor.tokenizer}


@pytest.mark.parametrize(
    ("role", "published", "pad_id"),
    [("inpainter", "sd2-inpainting/tokenizer", 0), ("segmenter", "clipseg-rd64-refined", 49407)],
)
def test_tiny_tokenizers_tokenize_as_the_published_files(
    inpainter, segmenter, tmp_path, role, published, pad_id
):
    tiny = _tokenizers(inpainter, segmenter)[role]
    real = _published_tokenizer(PUBLISHED / published, tmp_path)
    assert len(tiny) == len(real) == 49408 and tiny.model_max_length == 77
    assert tiny(FASHION).input_ids == real(FASHION).input_ids == FASHION_IDS
    assert tiny.pad_token_id == real.pad_token_id == pad_id  # SD 2 pads with "!", CLIPSeg with <|endoftext|>
    for text in (FASHION, LONG):
        kwargs = dict(padding="max_length", max_length=77, truncation=True)
        assert tiny(text, **kwargs).input_ids == real(text, **kwargs).input_ids
    cut = tiny(LONG, truncation=True).input_ids
    assert len(tiny(LONG).input_ids) > 77 and len(cut) == 77
    assert cut[:-1] == tiny(LONG).input_ids[:76] and cut[-1] == 49407


def test_tiny_text_encoders_have_the_clip_vocabulary(inpainter, segmenter):
    for config in (inpainter.pipe.text_encoder.config, segmenter.model.config.text_config):
        assert (config.vocab_size, config.max_position_embeddings) == (49408, 77)
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 2, 1)  # as published
        assert config.hidden_size <= 64  # tiny: the 49,408-row embedding stays a few MB


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_77_token_warning_fires_only_past_77_tokens(inpainter):
    """diffusers warns about what CLIP cuts off: not for the 165-character example, only past 77 tokens."""
    from diffusers.utils import logging as diffusers_logging

    records = _Records()
    logger = logging.getLogger("diffusers")
    logger.addHandler(records)
    verbosity = diffusers_logging.get_verbosity()  # the CLI's tests quiet diffusers for the whole process
    diffusers_logging.set_verbosity_warning()
    try:
        for prompt in (FASHION, LONG):
            inpainter.pipe.encode_prompt(prompt, "cpu", 1, False)
    finally:
        diffusers_logging.set_verbosity(verbosity)
        logger.removeHandler(records)
    truncated = [m for m in records.messages if "truncated" in m]
    assert len(truncated) == 1 and "sharp focus" in truncated[0]


def test_tiny_clipseg_interpolates_224_position_embeddings_to_352(segmenter, photo, monkeypatch):
    embeddings = segmenter.model.clip.vision_model.embeddings
    vision = segmenter.model.config.vision_config
    assert (vision.image_size, vision.patch_size) == (224, 16)  # as rd64-refined: a 14x14 grid
    assert segmenter.processor.image_processor.size["height"] == 352
    assert embeddings.position_embedding.weight.shape[0] == 14 * 14 + 1
    shapes = []
    original = embeddings.interpolate_pos_encoding

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(embeddings, "interpolate_pos_encoding", spy)
    logits = segmenter.logits(photo, ["a dress"])
    assert shapes == [(1, 22 * 22 + 1, vision.hidden_size)]  # 352 / 16 = 22: interpolated
    assert logits.shape == (1, photo.height, photo.width)


def test_tiny_clipseg_has_the_refined_decoder_head(segmenter):
    from torch import nn

    model = segmenter.model
    assert model.config.use_complex_transposed_convolution is True
    head = model.decoder.transposed_convolution
    ups = [m for m in head if isinstance(m, nn.ConvTranspose2d)]
    assert isinstance(head, nn.Sequential) and [m.stride for m in ups] == [(4, 4), (4, 4)]
    inputs = segmenter.processor(text=["a dress"], images=[_grey(400, 300)], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-2:] == (352, 352)  # 22x22 patches, x4 x4 by the two transposed convolutions


def _grey(w: int, h: int):
    from PIL import Image

    return Image.new("RGB", (w, h), (128, 128, 128))


def test_legacy_clipseg_preprocessor_config_reads_the_same(tmp_path):
    """The older ViTFeatureExtractor form of the processor (size 352) loads as the current one."""
    from transformers import ViTImageProcessor

    folder = PUBLISHED / "clipseg-rd64-refined"
    shutil.copy(folder / "preprocessor_config.legacy.json", tmp_path / "preprocessor_config.json")
    legacy, current = (ViTImageProcessor.from_pretrained(f) for f in (tmp_path, folder))
    assert legacy.to_dict() == current.to_dict()
    assert (current.size["height"], current.size["width"], current.resample) == (352, 352, 2)


def test_a_tiny_folder_of_an_older_layout_is_not_current(tiny_models, tmp_path):
    from restyle.models.tiny import TINY_MARKER, is_current_tiny, is_tiny

    assert all(is_current_tiny(folder) for folder in tiny_models.values())
    old = tmp_path / "old"
    old.mkdir()
    (old / TINY_MARKER).write_text(json.dumps({"kind": "inpainter", "seed": 0, "random_weights": True}))
    assert is_tiny(old) and not is_current_tiny(old) and not is_current_tiny(tmp_path / "none")
