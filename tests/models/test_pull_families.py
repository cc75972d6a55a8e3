"""`restyle models pull` fetches each family's loadable diffusers layout, not the single-file checkpoints,
fp16 / GGUF duplicates or unused parts beside it. The listings are of the kind these repos hold (root
single-file checkpoints beside the component folders; sharded transformers): illustrations of the rule,
not copies of the hub's file lists, which cannot be fetched from here."""

from restyle.models.hub import download_patterns

FLUX_FILL_LIKE = [
    "model_index.json",
    "flux1-fill-dev.safetensors",  # the single-file checkpoint (ComfyUI / BFL's own code)
    "ae.safetensors",
    "README.md",
    "LICENSE.md",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
    "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model-00001-of-00002.safetensors",
    "text_encoder_2/model-00002-of-00002.safetensors",
    "text_encoder_2/model.safetensors.index.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer_2/spiece.model",
    "tokenizer_2/tokenizer.json",
    "tokenizer_2/tokenizer_config.json",
    "scheduler/scheduler_config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
QWEN_EDIT_LIKE = [
    "model_index.json",
    "qwen_image_edit.gguf",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00009.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00004.safetensors",
    "text_encoder/model.safetensors.index.json",
    "processor/preprocessor_config.json",
    "processor/tokenizer_config.json",
    "processor/vocab.json",
    "processor/merges.txt",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "scheduler/scheduler_config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
SDXL_LIKE = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "text_encoder_2/model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
]


def test_flux_fill_takes_the_components_not_the_single_file_checkpoints():
    got = download_patterns(FLUX_FILL_LIKE)
    assert "flux1-fill-dev.safetensors" not in got and "ae.safetensors" not in got
    assert set(got) == {f for f in FLUX_FILL_LIKE if "/" in f} | {"model_index.json"}


def test_qwen_edit_takes_the_shards_and_the_processor_not_gguf():
    got = download_patterns(QWEN_EDIT_LIKE)
    assert "qwen_image_edit.gguf" not in got
    assert "processor/preprocessor_config.json" in got and "text_encoder/model.safetensors.index.json" in got
    assert len(got) == len(QWEN_EDIT_LIKE) - 1


def test_sdxl_takes_one_copy_of_each_weight():
    got = download_patterns(SDXL_LIKE)
    assert not any(".fp16." in f for f in got)
    assert "unet/diffusion_pytorch_model.safetensors" in got and "text_encoder_2/model.safetensors" in got
