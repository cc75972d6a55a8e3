"""`restyle bench`: one real (tiny) training configuration, the table, and the docs section update."""

from __future__ import annotations

from pathlib import Path

from restyle.perf.sections import BEGIN, END, write_section
from restyle.perf.training import TrainFigure, make_instance_set, run_train_config, train_table


def test_one_training_configuration_is_measured(tiny_models, tmp_path):
    make_instance_set(tmp_path / "instance", count=3, size=(64, 96))
    fig = run_train_config(str(tiny_models["inpainter"]), tmp_path, "lora", True, 64, 3, eight_bit=False)
    assert fig.mode == "lora" and fig.text_encoder and fig.steps == 3
    assert 0 < fig.s_per_step < 60
    assert fig.peak_mb > 50 and fig.memory_kind in {"process peak RSS", "CUDA peak allocated"}


def test_table_and_section_replace_only_their_own_text(tmp_path):
    figs = [TrainFigure("dreambooth", False, True, 20, 0.5, 1234.4, "CUDA peak allocated")]
    env = {"device": "GPU X", "base": "b", "resolution": "512", "versions": "torch 1"}
    table = train_table(figs, env)
    assert "| dreambooth | frozen | AdamW 8-bit | 0.500 | 1,234 MB (CUDA peak allocated) |" in table
    doc = Path(tmp_path / "PERF.md")
    doc.write_text("# Performance\n\nintro stays\n")
    write_section(doc, "first")
    write_section(doc, table)
    text = doc.read_text()
    assert text.startswith("# Performance\n\nintro stays\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "first" not in text and "GPU X" in text
