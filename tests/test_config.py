import pytest

from restyle.config import DEFAULT_INPAINTER, DEFAULT_SEGMENTER, load_model_config
from restyle.errors import InvalidParameterError


def test_defaults():
    cfg = load_model_config()
    assert (cfg.segmenter, cfg.inpainter, cfg.device) == (DEFAULT_SEGMENTER, DEFAULT_INPAINTER, "auto")


def test_file_then_env_then_flags(tmp_path, monkeypatch):
    conf = tmp_path / "c.toml"
    conf.write_text('[models]\nsegmenter = "from-file"\ninpainter = "from-file"\nvae_tiling = true\n')
    monkeypatch.setenv("RESTYLE_CONFIG", str(conf))
    monkeypatch.setenv("RESTYLE_INPAINTER", "from-env")
    monkeypatch.setenv("RESTYLE_ATTENTION_SLICING", "yes")
    cfg = load_model_config(segmenter=None, device="cpu")
    assert cfg.segmenter == "from-file" and cfg.inpainter == "from-env" and cfg.device == "cpu"
    assert cfg.vae_tiling is True and cfg.attention_slicing is True
    assert load_model_config(inpainter="from-flag").inpainter == "from-flag"


def test_bad_bool_and_unknown_key(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_VAE_TILING", "maybe")
    with pytest.raises(InvalidParameterError, match="vae_tiling"):
        load_model_config()
    monkeypatch.delenv("RESTYLE_VAE_TILING")
    conf = tmp_path / "c.toml"
    conf.write_text('[models]\nsegmentr = "typo"\n')
    monkeypatch.setenv("RESTYLE_CONFIG", str(conf))
    with pytest.raises(InvalidParameterError, match="segmentr"):
        load_model_config()
