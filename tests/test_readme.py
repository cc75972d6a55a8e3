"""Every command and code block of the README, run as a new user runs them on a machine without weights.

The blocks run in README order in one folder (later blocks use what earlier ones wrote, e.g. photo.jpg).
`restyle ...` lines run through the console entry point (`restyle.cli.main`) in this process; curl, the
Python blocks and `accelerate` run as real processes; `make serve` is the live preview server that
curl and `restyle invoke` talk to. A command either succeeds, or is listed in EXPECTED_ERRORS with the one
line it must print (exit 2, no traceback): on a machine without weights, training needs a base model first.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
README_URL = "http://127.0.0.1:8080"

# Commands that are not run here, and why (a new README command is never skipped silently: see below).
NOT_RUN = {
    "make serve": "the `readme_server` fixture runs what it runs: `restyle serve` in preview mode",
    "make test": "this test suite itself",
    "make test-slow": "CI runs it, after `make test`",
    "make lint": "CI runs it",
    "make typecheck": "CI runs it",
    "restyle serve --ray --replicas 2 --port 8080 -o out/serve": "it serves until stopped; "
    "tests/scale/test_ray_serve.py runs the same app (2 replicas on the tiny models)",
}
# Commands that need something no new user has yet (weights, a trained model, a download): each must print
# exactly one line, starting "Error:", that contains this text and says what to do.
EXPECTED_ERRORS = {
    "restyle models pull": "cannot download: HF_HUB_OFFLINE is set",
    "restyle models convert-clipseg": "decoder: no such file: rd64-uni-refined.pth",
    "restyle train dreambooth": "restyle models pull --inpainter sd2-community/stable-diffusion-2-inpainting",
    "restyle train lora": "restyle models pull --inpainter sd2-community/stable-diffusion-2-inpainting",
    "--inpainter skirt-model/": "'skirt-model/': no such folder",
    "--lora skirt-lora/": "--lora: no such file or folder: skirt-lora",
    "restyle serve --lora skirts=skirt-lora/": "--lora skirts=skirt-lora/: no such file or folder",
    "restyle package skirt-model/": "skirt-model has no model_index.json",
}
SLOW = ("restyle bench",)  # minutes on a CPU: `-m slow` runs them (.ci/run does, after `make test`)


def code_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced bash/python block, in order."""
    return re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The argv of each command in a bash block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A new user's folder and environment: no weights, no config, the hub unreachable."""
    root = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTYLE_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(root / "hf-home"),  # an empty Hugging Face cache
        HF_HUB_CACHE=str(root / "hf-home" / "hub"),
        RESTYLE_CACHE=str(root / "restyle-cache"),
        RESTYLE_CONFIG=str(root / "no-config.toml"),
        COLUMNS="80",
    )
    (root / "work").mkdir()
    return {"cwd": root / "work", "env": env}


@pytest.fixture(scope="module")
def readme_server(workspace: dict):
    """`make serve`: `restyle serve` on this machine without weights (preview mode)."""
    port = _free_port()
    log_path = workspace["cwd"].parent / "serve.log"
    cmd = [sys.executable, "-m", "restyle", "serve", "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=workspace["cwd"], env=workspace["env"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    from restyle.client import Client

    client = Client(url, timeout=10)
    deadline = time.monotonic() + 600  # a safety net for a very busy machine, not a speed budget
    while not client.ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not become ready:\n" + log_path.read_text()[-3000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def _expected_error(line: str) -> str | None:
    return next((text for key, text in EXPECTED_ERRORS.items() if key in line), None)


def _run_restyle(argv: list[str], ws: dict, monkeypatch: pytest.MonkeyPatch, capfd) -> tuple[int, str, str]:
    """`restyle ARGS` through the console entry point, in the user's folder and environment."""
    from restyle.cli import main

    monkeypatch.chdir(ws["cwd"])
    for key in [k for k in os.environ if k.startswith(("RESTYLE_", "HF_"))]:
        monkeypatch.delenv(key)
    for key, value in ws["env"].items():
        if key.startswith(("RESTYLE_", "HF_", "COLUMNS")):
            monkeypatch.setenv(key, value)
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", ws["env"]["HF_HUB_CACHE"])  # read once, at import
    monkeypatch.setattr(sys, "argv", argv)
    capfd.readouterr()
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out, err = capfd.readouterr()
    return code, out, err


def _run_process(argv: list[str], ws: dict, input_text: str | None = None) -> tuple[int, str, str]:
    env = {**ws["env"], "PATH": f"{BIN}{os.pathsep}{ws['env'].get('PATH', '')}"}
    proc = subprocess.run(
        argv, cwd=ws["cwd"], env=env, capture_output=True, text=True, timeout=900, input=input_text
    )
    return proc.returncode, proc.stdout, proc.stderr


def _check(line: str, code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, f"{line}\n{err[-3000:]}"
    expected = _expected_error(line)
    if expected is None:
        assert code == 0, f"{line}: exit {code}\n{err[-3000:]}"
        return
    errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert code == 2 and len(errors) == 1 and expected in errors[0], f"{line}: exit {code}\n{err[-3000:]}"
    assert err.rstrip().splitlines()[-1] == errors[0], err  # the error is the last word


BLOCKS = code_blocks()


def test_the_readme_has_the_blocks_this_test_knows() -> None:
    fences = re.findall(r"^```(\w*)$", README.read_text(), flags=re.M)
    openings = fences[::2]  # every other fence closes a block
    assert set(openings) <= {"bash", "python", "text"}, openings  # an untested kind of block would hide
    lines = [" ".join(argv) for lang, text in BLOCKS if lang == "bash" for argv in commands(text)]
    known = ("restyle", "curl", "source", "make", "accelerate")
    assert lines and all(line.split()[0] in known for line in lines), lines
    makes = {line for line in lines if line.startswith("make")}
    assert makes <= set(NOT_RUN), makes - set(NOT_RUN)
    for key in EXPECTED_ERRORS:  # a stale entry would let a command fail unnoticed
        assert any(key in line for line in lines), key


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}-{b[0]}" for i, b in enumerate(BLOCKS)])
def test_readme_block_runs_as_written(index, workspace, readme_server, monkeypatch, capfd) -> None:
    lang, text = BLOCKS[index]
    if lang == "python":
        code, out, err = _run_process([sys.executable, "-"], workspace, input_text=text)
        _check("python block", code, out, err)
        return
    for argv in commands(text):
        line = " ".join(argv)
        if line in NOT_RUN or argv[0] == "source":  # the venv's bin/ is on PATH for every process here
            continue
        if line.startswith(SLOW):
            continue  # test_readme_slow_commands runs these
        argv = [a.replace(README_URL, readme_server) for a in argv]
        if argv[0] == "restyle":
            code, out, err = _run_restyle(argv, workspace, monkeypatch, capfd)
        else:
            code, out, err = _run_process(argv, workspace)
        _check(line, code, out, err)
        if argv[0] == "curl":
            assert '"status":"ready"' in out and '"preview":true' in out, out


@pytest.mark.slow
def test_readme_slow_commands(workspace, monkeypatch, capfd) -> None:
    """The benchmark commands as written (minutes on a 2-core CPU): `-m slow`."""
    docs = workspace["cwd"] / "docs"
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    (docs / "PERFORMANCE.md").write_text("# Performance\n")
    ran = 0
    for lang, text in BLOCKS:
        for argv in commands(text) if lang == "bash" else []:
            if " ".join(argv).startswith(SLOW):
                code, out, err = _run_restyle(argv, workspace, monkeypatch, capfd)
                _check(" ".join(argv), code, out, err)
                ran += 1
    written = (docs / "PERFORMANCE.md").read_text()
    assert ran >= 3 and "<!-- bench:infer" in written and "<!-- bench:train" in written, written[:2000]
    assert "<!-- bench:batch -->" in written and "| Ray Data (2 actors) |" in written, written[-2000:]
    assert (docs / "bench" / "infer.json").is_file()
