"""Tiny SDXL-inpainting, FLUX.1 Fill and Qwen-Image-Edit models: built offline, loaded by their pipeline
classes, a 2-step inpainting call on a 64 px photo with a mask, reproducible, batched, LoRA-ready."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restyle.models
from restyle.models.tiny import TINY_MARKER
from restyle.models.tiny_families import FAMILY_PIPELINES, TINY_BUILDERS, build_tiny_lora_for

PUBLISHED = Path(restyle.models.__path__[0]) / "published"
FAMILIES = list(TINY_BUILDERS)  # "sdxl", "flux-fill", "qwen-edit"
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
PROMPTS = ("a red silk evening dress", "a blue denim jacket")
CALL = {  # what each pipeline needs besides prompt / image / mask_image / generator
    "sdxl": dict(height=64, width=64, strength=0.99, guidance_scale=7.5),  # true CFG: 2 UNet passes a step
    # guidance_scale: FLUX's distilled guidance, an input of the transformer (one pass a step, no CFG)
    "flux-fill": dict(height=64, width=64, guidance_scale=30.0, max_sequence_length=512),
    "qwen-edit": dict(negative_prompt=" ", true_cfg_scale=4.0, strength=1.0),  # CFG needs a negative prompt
}
OUTPUT_SIDE = {"sdxl": 64, "flux-fill": 64, "qwen-edit": 1024}  # qwen-edit always works at ~1 megapixel
PUBLISHED_FOLDER = {"sdxl": "sdxl-inpainting", "flux-fill": "flux1-fill-dev", "qwen-edit": "qwen-image-edit"}
# The vendored files' SHA-256, first 32 hex digits (published/SOURCES-inpainters.md: where each comes from)
PUBLISHED_SHA256 = {
    "flux1-fill-dev": {
        "model_index.json": "bad7cc444351a432f8d981b508e1cb56",
        "scheduler/scheduler_config.json": "6b5905c111d5e61acd8a0c91938dae5f",
        "text_encoder/config.json": "e691df3f163d7afead2dbfccd0b251a7",
        "text_encoder_2/config.json": "0ac165266dad167f42051d3eaa77adac",
        "tokenizer/special_tokens_map.json": "2cdb3b8331a60c92fc1e55a13e9fd61f",
        "tokenizer/tokenizer_config.json": "6bdcee9ccce2a16ca2b4c0c5ed00b42c",
        "transformer/config.json": "d2fed8083b78160ed165899818f0f274",
        "vae/config.json": "bc1e208f414a315365fbecf426838f43",
    },
    "qwen-image-edit": {
        "model_index.json": "d41bd16f816a0b78c773bf2dce6feeff",
        "processor/preprocessor_config.json": "b5eaad0c2815f07631535dcc58f3c462",
        "scheduler/scheduler_config.json": "42e69429b12cb418527feba57b8d8458",
        "text_encoder/config.json": "5a5e5465064f15217247722e0fc95d9b",
        "transformer/config.json": "249d908c3ec1ecef0998c6aca3571224",
        "vae/config.json": "4bcfd1c616b09ff99fbb2d759646d904",
    },
    "sdxl-inpainting": {
        "model_index.json": "308a792b15086bf89807b88729ef80d3",
        "scheduler/scheduler_config.json": "af3e45a949aff8b8341ab8b811429ec0",
        "text_encoder/config.json": "46ae51fa8bde7817168d97faa0556cc0",
        "text_encoder_2/config.json": "fbcd3aad07a99e28d4c51550bd798903",
        "tokenizer/special_tokens_map.json": "a46982c1c09487f4ba4118d4d491a01d",
        "tokenizer/tokenizer_config.json": "19d7b034cb0cc3ce9766c2231373ab8a",
        "tokenizer_2/special_tokens_map.json": "f118ab3a983206e4f32583448de6bd6a",
        "tokenizer_2/tokenizer_config.json": "c9d23941f76a41cbd50eda9290f57be7",
        "unet/config.json": "aaedf41fbcb29d2d8725241413b8525b",
        "vae/config.json": "b822341e6125efedebffb8e3f35e7288",
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def _photo(seed: int, side: int = 64) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 256, (side, side, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _mask(side: int = 64) -> Image.Image:
    mask = Image.new("L", (side, side), 0)  # 255 = repaint: a garment-sized box in the middle
    mask.paste(255, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    return mask


def _assemble_qwen(folder: Path):
    """QwenImageEditInpaintPipeline from the folder's components, for an environment without torchvision.

    transformers' Qwen2VLProcessor refuses to be built without a video processor, which needs torchvision;
    the edit pipeline never passes videos, so the processor is put together from its image processor and
    tokenizer here. With torchvision, `from_pretrained` loads the same folder (see the test below).
    """
    import diffusers
    import transformers

    tokenizer = transformers.Qwen2TokenizerFast.from_pretrained(folder / "processor")
    processor = transformers.Qwen2VLProcessor.__new__(transformers.Qwen2VLProcessor)
    processor.image_processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(folder / "processor")
    processor.tokenizer, processor.video_processor, processor.chat_template = tokenizer, None, None
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    processor.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return diffusers.QwenImageEditInpaintPipeline(
        transformer=diffusers.QwenImageTransformer2DModel.from_pretrained(folder / "transformer"),
        vae=diffusers.AutoencoderKLQwenImage.from_pretrained(folder / "vae"),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
        text_encoder=transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(folder / "text_encoder"),
        tokenizer=transformers.Qwen2TokenizerFast.from_pretrained(folder / "tokenizer"),
        processor=processor,
    )


def _load(family: str, folder: Path):
    import diffusers

    if family == "qwen-edit" and not HAS_TORCHVISION:
        pipe = _assemble_qwen(folder)
    else:
        pipe = getattr(diffusers, FAMILY_PIPELINES[family][1]).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inpaint(pipe, family: str, seeds: list[int], side: int = 64, **overrides) -> np.ndarray:
    """A 2-step call: one prompt / photo / mask / generator per seed (lists when there are several)."""
    batch = len(seeds) > 1
    kwargs = dict(CALL[family], num_inference_steps=2, output_type="np", **overrides)
    if batch and family == "qwen-edit":
        kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(seeds)
    prompts = [PROMPTS[s % 2] for s in seeds]
    images = [_photo(s, side) for s in seeds]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompt=prompts if batch else prompts[0],
        image=images if batch else images[0],
        mask_image=[_mask(side)] * len(seeds) if batch else _mask(side),
        generator=generators if batch else generators[0],
        **kwargs,
    ).images


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-families")
    return {family: build(root / family) for family, build in TINY_BUILDERS.items()}


@pytest.fixture(scope="session")
def family_pipes(family_folders: dict[str, Path]) -> dict:
    return {family: _load(family, folder) for family, folder in family_folders.items()}


@pytest.fixture(scope="session")
def first_images(family_pipes: dict) -> dict[str, np.ndarray]:
    return {family: _inpaint(pipe, family, [0]) for family, pipe in family_pipes.items()}


def test_vendored_files_are_the_recorded_bytes():
    for folder, recorded in PUBLISHED_SHA256.items():
        files = sorted(p for p in (PUBLISHED / folder).rglob("*") if p.is_file())
        assert {str(p.relative_to(PUBLISHED / folder)): _sha256(p) for p in files} == recorded, folder


@pytest.mark.parametrize("family", FAMILIES)
def test_model_index_and_scheduler_are_the_published_files(family_folders, family):
    folder, published = family_folders[family], PUBLISHED / PUBLISHED_FOLDER[family]
    for name in ("model_index.json", "scheduler/scheduler_config.json"):
        assert _sha256(folder / name) == _sha256(published / name), name
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == FAMILY_PIPELINES[family][0]
    marker = json.loads((folder / TINY_MARKER).read_text())
    assert (marker["kind"], marker["family"], marker["random_weights"]) == ("inpainter", family, True)


@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
def test_folder_loads_with_its_pipeline_class(family_pipes, family):
    assert type(family_pipes[family]).__name__ == FAMILY_PIPELINES[family][1]
    assert family_pipes[family].vae_scale_factor == 8


@pytest.mark.skipif(not HAS_TORCHVISION, reason="Qwen2VLProcessor needs a video processor, i.e. torchvision")
def test_qwen_folder_loads_with_from_pretrained(family_folders):
    from diffusers import QwenImageEditInpaintPipeline

    pipe = QwenImageEditInpaintPipeline.from_pretrained(family_folders["qwen-edit"])
    assert pipe.processor.image_token_id == 151655 and pipe.vae_scale_factor == 8


@pytest.mark.parametrize("family", FAMILIES)
def test_a_two_step_masked_call_returns_an_image(first_images, family):
    image = first_images[family]
    side = OUTPUT_SIDE[family]
    assert image.shape == (1, side, side, 3)
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_seed_gives_the_same_pixels(family_pipes, first_images, family):
    assert np.array_equal(_inpaint(family_pipes[family], family, [0]), first_images[family])


@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
def test_lists_of_prompts_images_masks_and_generators_batch_per_item(family_pipes, first_images, family):
    pipe = family_pipes[family]
    batch = _inpaint(pipe, family, [0, 1])
    assert batch.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(batch[0], first_images[family][0], atol=1e-4)  # item i: seed i alone
    np.testing.assert_allclose(batch[1], _inpaint(pipe, family, [1])[0], atol=1e-4)
    with pytest.raises(ValueError, match="generators"):  # the batch size comes from the prompt
        pipe(prompt=PROMPTS[0], image=[_photo(0)] * 2, mask_image=[_mask()] * 2, num_inference_steps=2,
             generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **CALL[family])  # fmt: skip


@pytest.mark.slow
def test_qwen_batches_per_item_when_photos_come_at_its_working_size(family_pipes):
    """A list of photos reaches Qwen2.5-VL unresized (a single one is resized to ~1 MP first), so batched
    items match single calls only for photos already at the pipeline's working size."""
    pipe = family_pipes["qwen-edit"]
    batch = _inpaint(pipe, "qwen-edit", [0, 1], side=1024)
    assert batch.shape == (2, 1024, 1024, 3)
    np.testing.assert_allclose(batch[0], _inpaint(pipe, "qwen-edit", [0], side=1024)[0], atol=5e-3)


@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
def test_a_random_lora_loads_and_changes_the_output(family_folders, first_images, tmp_path, family):
    lora = build_tiny_lora_for(family, family_folders[family], tmp_path / "lora")
    assert lora.name == "pytorch_lora_weights.safetensors" and lora.is_file()
    pipe = _load(family, family_folders[family])  # a fresh pipeline: the session one stays LoRA-free
    pipe.load_lora_weights(lora.parent)
    styled = _inpaint(pipe, family, [0])
    assert np.abs(styled - first_images[family]).max() > 1e-3


def test_lora_for_an_unknown_family_is_refused(family_folders, tmp_path):
    with pytest.raises(ValueError, match="qwen-edit"):
        build_tiny_lora_for("qwen-edit", family_folders["qwen-edit"], tmp_path)


def test_t5_tokenizer_keeps_t5s_special_ids(family_pipes):
    tokenizer = family_pipes["flux-fill"].tokenizer_2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1  # sentinels at the top
    assert len([t for t in tokenizer.get_vocab() if t.startswith("<extra_id_")]) == 100
    ids = tokenizer("a red silk evening dress").input_ids
    assert ids[-1] == 1 and 2 not in ids and len(ids) == 6  # five known words, then </s>
    assert tokenizer.model_max_length == 512
    assert family_pipes["flux-fill"].text_encoder_2.config.vocab_size == 32128  # as published


def test_clip_tokenizers_are_the_published_bpe(family_pipes):
    sdxl, flux = family_pipes["sdxl"], family_pipes["flux-fill"]
    for tokenizer in (sdxl.tokenizer, sdxl.tokenizer_2, flux.tokenizer):
        assert (len(tokenizer), tokenizer.model_max_length) == (49408, 77)
    assert sdxl.tokenizer_2.pad_token == "!" and sdxl.tokenizer.pad_token == "<|endoftext|>"  # as published


def test_qwen_tokenizer_keeps_the_published_ids_and_the_64_token_system_prompt(family_pipes):
    pipe = family_pipes["qwen-edit"]
    tokenizer = pipe.tokenizer
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    expected |= {"<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655}
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tokenizer) == 151665 and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer(pipe.prompt_template_encode.format("a red silk evening dress")).input_ids
    start = pipe.prompt_template_encode_start_idx  # 64: what the pipeline drops, the system prompt
    assert tokenizer.decode(ids[start - 3 : start]) == "<|im_start|>user\n"
    assert ids[start] == 151652  # <|vision_start|>: the drop ends exactly at the user's turn
    config = pipe.text_encoder.config
    assert (config.image_token_id, config.vision_start_token_id) == (151655, 151652)
