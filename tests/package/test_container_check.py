"""The archive in the serving image's shoes: requirements, the toolkit's import, MMS's worker, the answers.

The fast tests cover the pieces (code/sitecustomize.py, the weight comparison, requirements.txt, the image
checks). The `slow` ones (CI runs them) build fresh virtual environments from PyPI and run the real
sagemaker-huggingface-inference-toolkit and multi-model-server: the tiny archive passes with the original
payload verbatim, and archives that break in the container fail the check, naming why.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from restyle.errors import InvalidParameterError
from restyle.package import ArchiveError, build_archive
from restyle.package.archive import IMAGE_DEPS, PINNED_DEPS, requirements
from restyle.package.container_check import ContainerCheck, _compare, check_in_container
from restyle.package.deploy import DeploySpec, plan
from restyle.package.images import IMAGES, TARGET, TRANSFORMERS_5, check_image, default_image

COMPAT = Path(__file__).parents[2] / "src" / "restyle" / "package" / "toolkit_compat.py"
WHEELS = tuple(p for p in ("/opt/wheels",) if Path(p).is_dir())  # this workplace's CPU torch wheel
DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"


# --- code/sitecustomize.py -------------------------------------------------------------------------


def _python_with(
    tmp_path: Path, *, has_tf: bool, image_site: bool = False, env: dict | None = None, before: str = ""
):
    """Run `from transformers.file_utils import is_tf_available` as a toolkit worker would, against a stand-in
    transformers package, with the archive's code/ first on PYTHONPATH (as the toolkit sets it)."""
    code, fake, image = tmp_path / "code", tmp_path / "fake", tmp_path / "image"
    code.mkdir()
    shutil.copy(COMPAT, code / "sitecustomize.py")
    (fake / "transformers").mkdir(parents=True)
    (fake / "transformers" / "__init__.py").write_text('__version__ = "5.0.0"\n')
    body = "def is_torch_available():\n    return True\n"
    if has_tf:
        body += "def is_tf_available():\n    return 'the library own'\n"
    (fake / "transformers" / "file_utils.py").write_text(body)
    path = [code, fake]
    if image_site:
        image.mkdir()
        (image / "sitecustomize.py").write_text(
            "import sys\nsys.stderr.write('image sitecustomize ran\\n')\n"
        )
        path.append(image)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            before + "from transformers.file_utils import is_tf_available, is_torch_available\n"
            "print(is_tf_available())",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": ":".join(map(str, path)), "PATH": "/usr/bin:/bin", **(env or {})},
        cwd=tmp_path,
    )


def test_compat_supplies_is_tf_available_only_where_transformers_lacks_it_and_says_so(tmp_path):
    proc = _python_with(tmp_path, has_tf=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert "has no is_tf_available; supplied one" in proc.stderr


def test_compat_survives_a_find_spec_that_does_not_load(tmp_path):
    """importlib.util.find_spec asks without loading: the finder must stay until the module loads."""
    proc = _python_with(
        tmp_path,
        has_tf=False,
        before="import importlib.util\nimportlib.util.find_spec('transformers.file_utils')\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_compat_leaves_a_transformers_that_has_it_alone(tmp_path):
    proc = _python_with(tmp_path, has_tf=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "the library own"
    assert "supplied" not in proc.stderr


def test_without_compat_the_toolkits_import_fails(tmp_path):
    """The failure the compat layer exists for (RESTYLE_TOOLKIT_COMPAT=0 turns it off)."""
    proc = _python_with(tmp_path, has_tf=False, env={"RESTYLE_TOOLKIT_COMPAT": "0"})
    assert proc.returncode != 0
    assert "cannot import name 'is_tf_available'" in proc.stderr


def test_compat_does_not_hide_the_images_own_sitecustomize(tmp_path):
    proc = _python_with(tmp_path, has_tf=False, image_site=True)
    assert proc.returncode == 0, proc.stderr
    assert "image sitecustomize ran" in proc.stderr
    assert "also running" in proc.stderr and str(tmp_path / "image") in proc.stderr


def test_compat_works_on_the_transformers_restyle_pins():
    """The real transformers of this environment (the version code/requirements.txt pins)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import toolkit_compat as c; c.install(); "
            "from transformers.file_utils import is_tf_available, is_torch_available; "
            "print(is_tf_available(), is_torch_available())",
            str(COMPAT.parent),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
    assert "supplied one that returns False" in out.stderr


# --- the weight comparison -----------------------------------------------------------------------------


def test_weights_compare_by_value_whatever_the_names():
    saved = [[[4], 1.0, 1.0], [[4], 1.004, 1.004], [[4, 4], -3.0, 9.0]]
    renamed_and_reordered = [[[4, 4], -3.0, 9.0], [[4], 1.004, 1.004], [[4], 1.0, 1.0]]
    assert _compare(saved, renamed_and_reordered) == (0, 0)
    fp16_rounded = [[[4], 1.0004, 1.0004], [[4], 1.0041, 1.0041], [[4, 4], -3.01, 9.01]]
    assert _compare(saved, fp16_rounded) == (0, 0)
    tied_copy = [*renamed_and_reordered, [[4, 4], -3.0, 9.0]]  # one tensor held under two names
    assert _compare(saved, tied_copy) == (0, 0)


def test_weights_initialised_at_random_are_caught():
    saved = [[[8], 0.31, 2.2], [[8], -0.7, 3.1]]
    random_init = [[[8], 0.05, 6.4], [[8], 0.12, 6.1]]
    assert _compare(saved, random_init) == (2, 2)
    assert _compare(saved, []) == (2, 0)
    missing_keys = [*saved, [[8], 0.9, 5.0]]  # loaded, but in no file: initialised at random
    assert _compare(saved, missing_keys) == (0, 1)


# --- code/requirements.txt -----------------------------------------------------------------------------


def test_requirements_pin_the_model_libraries_and_leave_the_images_builds():
    lines = [ln for ln in requirements().splitlines() if ln and not ln.startswith("#")]
    names = [ln.split("=")[0].split(">")[0] for ln in lines]
    assert names == [*PINNED_DEPS, *IMAGE_DEPS]
    from importlib import metadata

    for dist in PINNED_DEPS:
        assert f"{dist}=={metadata.version(dist)}" in lines
    for line in lines[len(PINNED_DEPS) :]:
        assert ">=" in line and "==" not in line, line  # numpy/pillow/scipy: restyle's floors only
    assert not any(n == "torch" for n in names)  # the image's CUDA build stays


def test_the_archive_carries_the_compat_layer(tiny_models, tmp_path):
    out = tmp_path / "model.tar.gz"
    build_archive(tiny_models["inpainter"], out)
    with tarfile.open(out) as tar:
        assert tar.extractfile("code/sitecustomize.py").read() == COMPAT.read_bytes()


# --- the image deploy uses ---------------------------------------------------------------------------


def test_the_default_image_is_the_sdks_torch_2_6_build_in_the_instances_flavour():
    assert (
        default_image("us-east-1", "ml.g5.xlarge")
        == DLC + "2.6.0-transformers4.51.3-gpu-py312-cu124-ubuntu22.04"
    )
    assert default_image("us-east-1", "ml.m5.xlarge").endswith(
        ":2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04"
    )
    assert default_image("eu-south-1", "ml.g5.xlarge").startswith(
        "692866216735.dkr.ecr.eu-south-1.amazonaws.com/"
    )
    assert default_image("cn-north-1", "ml.g5.xlarge").startswith(
        "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/"
    )
    assert set(IMAGES) == {"4.51.3", "5.5.3"}
    for image in IMAGES.values():
        for tag in (image.tag("gpu"), image.tag("cpu")):
            instance = "ml.g5.xlarge" if "gpu" in tag else "ml.c5.xlarge"
            assert "Hugging Face inference image" in check_image(DLC + tag, instance, "us-east-1")
    assert check_image(DLC + TRANSFORMERS_5.tag() + "-v1.2", "ml.g5.xlarge")  # a pinned release tag


@pytest.mark.parametrize(
    "uri, instance, words",
    [
        # the old default: torch older than the archive's transformers/diffusers accept
        (
            DLC + "2.3.0-transformers4.46.1-gpu-py311-cu121-ubuntu20.04",
            "ml.g5.xlarge",
            ["torch 2.3.0", "torch>=2.6"],
        ),
        (
            DLC + "2.1.0-transformers4.37.0-gpu-py310-cu118-ubuntu20.04",
            "ml.g5.xlarge",
            ["Python 3.10", "3.11"],
        ),
        (DLC + "2.6.0-transformers5.5.3-cpu-py312-ubuntu22.04", "ml.g5.xlarge", ["cpu image", "has GPU"]),
        (
            DLC + "2.6.0-transformers5.5.3-gpu-py312-cu124-ubuntu22.04",
            "ml.m5.large",
            ["gpu image", "has no GPU"],
        ),
        (
            DLC.replace("huggingface-pytorch-inference", "pytorch-inference") + "2.6.0-gpu-py312",
            "ml.g5.xlarge",
            ["pytorch-inference is not huggingface-pytorch-inference"],
        ),
        (DLC + "latest", "ml.g5.xlarge", ["not a Hugging Face inference tag"]),
        ("restyle:latest", "ml.g5.xlarge", ["not an ECR image"]),
        (
            DLC.replace("us-east-1", "us-west-2") + TARGET.tag(),
            "ml.g5.xlarge",
            ["in us-west-2", "in us-east-1"],
        ),
        (DLC + TARGET.tag("cpu"), "ml.c7g.xlarge", ["Graviton", "x86"]),
    ],
)
def test_a_mismatched_image_is_refused_by_name(uri, instance, words):
    with pytest.raises(InvalidParameterError) as err:
        plan(
            DeploySpec(
                name="r",
                model_data="s3://b/model.tar.gz",
                role="arn:aws:iam::1:role/r",
                image_uri=uri,
                instance_type=instance,
            )
        )
    assert err.value.field == "image_uri"
    for word in words:
        assert word in str(err.value)


def test_your_own_image_is_taken_as_restyles_container():
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/restyle:0.1"
    assert "restyle serve" in check_image(uri, "ml.g5.xlarge")


def test_container_options_without_container_are_refused():
    from typer.testing import CliRunner

    from restyle.cli import app

    result = CliRunner().invoke(app, ["package", "verify", "model.tar.gz", "--toolkit", "x"])
    assert isinstance(result.exception, InvalidParameterError)  # the CLI's main prints it in one line
    assert "go with --container" in str(result.exception)


def test_the_plan_sets_workers_and_the_response_limit():
    calls = plan(
        DeploySpec(name="r", model_data="s3://b/model.tar.gz", role="arn:aws:iam::1:role/r", workers=4)
    )
    env = calls[0]["params"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "4"
    assert env["RESTYLE_MAX_RESPONSE_MB"] == "6"


# --- the real toolkit, in a fresh venv (slow: PyPI installs and MMS) -----------------------------------


def _rewrite(
    archive: Path, out: Path, *, drop: set[str] = frozenset(), replace: dict[str, bytes] | None = None
):
    """A copy of `archive` without the names in `drop` and with members' bytes replaced."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz", compresslevel=1) as dst:
        for member in src.getmembers():
            if member.name in drop:
                continue
            data = (replace or {}).get(member.name)
            if data is None:
                dst.addfile(member, src.extractfile(member))
            else:
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def tiny_archive(tiny_models, tmp_path_factory) -> Path:
    from restyle.models.tiny import build_tiny_lora

    lora = build_tiny_lora(tiny_models["inpainter"], tmp_path_factory.mktemp("lora"))
    out = tmp_path_factory.mktemp("pkg") / "model.tar.gz"
    build_archive(
        tiny_models["inpainter"], out, segmenter=tiny_models["segmenter"], styles=(("skirts", str(lora)),)
    )
    return out


@pytest.mark.slow
def test_the_tiny_archive_serves_the_original_payload_through_the_real_toolkit(tiny_archive, tmp_path):
    lines: list[str] = []
    report = check_in_container(
        tiny_archive, ContainerCheck(find_links=WHEELS, keep=tmp_path / "check", say=lines.append)
    )
    answers = {a["name"]: a for a in report["answers"]}
    original = answers["original payload"]
    assert original["status"] == 200 and original["content_type"] == "application/json"
    assert original["images"] == [["JPEG", 512, 768]] * 3  # 96x144 photo: the aspect kept at 768
    assert (
        answers["Accept: image/png"]["status"] == 400 and "accept" in answers["Accept: image/png"]["message"]
    )
    assert "num_inference_steps" in answers["bad field"]["message"]
    assert report["versions"]["sagemaker-huggingface-inference-toolkit"] == "2.6.0"  # the image's own
    assert report["image"] == TARGET.tag() == "2.6.0-transformers4.51.3-gpu-py312-cu124-ubuntu22.04"
    assert report["versions"]["multi-model-server"] == "1.1.11"
    from importlib import metadata

    assert report["versions"]["transformers"] == metadata.version("transformers")  # requirements.txt won
    assert set(report["weights"]) == {"unet", "vae", "text_encoder", "segmenter"}
    log = (tmp_path / "check" / "container-check.log").read_text()
    assert "supplied one that returns False" in log  # the compat layer was what let the toolkit import
    assert any("original payload: 3 x 768 px, 45 steps" in line for line in lines)


@pytest.mark.slow
def test_an_archive_whose_requirements_break_the_toolkits_import_fails(tiny_archive, tmp_path):
    """The archive as restyle built it before: transformers 5 pinned and nothing to make the released
    toolkit import under it. MMS would report Healthy while every worker died; the check fails, through
    the CLI as a user runs it."""
    broken = _rewrite(tiny_archive, tmp_path / "broken.tar.gz", drop={"code/sitecustomize.py"})
    links = [arg for path in WHEELS for arg in ("--find-links", path)]
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "restyle"),
            "package",
            "verify",
            str(broken),
            "--container",
            *links,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0, proc.stderr
    assert "container check: installing code/requirements.txt as the container does" in proc.stderr
    error = proc.stderr.strip().splitlines()
    assert any(line.startswith("Error: container check: toolkit import failed") for line in error)
    assert "is_tf_available" in proc.stderr
    assert json.loads(proc.stdout)["failed"] == "toolkit import"  # the report so far, on stdout


@pytest.mark.slow
def test_an_archive_with_an_older_transformers_fails_on_its_weights(tiny_archive, tmp_path):
    """requirements.txt pinning the transformers 5.5.3 set (the newer image's own) under models saved by
    restyle's transformers: the handler loads and would answer 200, but 5.5.3 cannot read the text encoder
    as saved and runs it on random weights."""
    with tarfile.open(tiny_archive) as tar:
        reqs = tar.extractfile("code/requirements.txt").read().decode()
    five = TRANSFORMERS_5
    older = {
        "transformers": five.transformers,
        "huggingface_hub": five.huggingface_hub,
        "diffusers": five.diffusers,
        "peft": five.peft,
        "accelerate": five.accelerate,
    }
    lines = []
    for line in reqs.splitlines():
        name = line.split("==")[0]
        if name == "tokenizers":
            continue  # transformers 5.5.3 takes its own
        lines.append(f"{name}=={older[name]}" if name in older else line)
    broken = _rewrite(
        tiny_archive,
        tmp_path / "older-transformers.tar.gz",
        replace={"code/requirements.txt": ("\n".join(lines) + "\n").encode()},
    )
    with pytest.raises(ArchiveError) as err:
        check_in_container(broken, ContainerCheck(find_links=WHEELS, steps=1))
    assert "text_encoder:" in str(err.value) and "initialised them at random" in str(err.value)
    assert err.value.report["versions"]["transformers"] == five.transformers
