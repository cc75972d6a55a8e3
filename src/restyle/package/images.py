"""The serving images model.tar.gz targets, and the checks `restyle deploy` makes on an image URI.

restyle targets the Hugging Face PyTorch inference image (the container the original design deployed to)
on torch 2.6 / Python 3.12, in two builds the `sagemaker` SDK knows:

- transformers 4.51.3 (the default): its inference toolkit is the released 2.6.0, so everything of its
  Python side can be installed from PyPI and `restyle package verify --container` runs it as it is;
- transformers 5.5.3 (the newest): its toolkit is an unreleased git commit, which that check can install
  only where GitHub is reachable.

In both, code/requirements.txt upgrades the model libraries to restyle's before the handler loads. Why
this choice, and what changes in the image: docs/SERVING.md, "Which image". The versions below are the
images' own, as their Dockerfiles install them.

Sources:
- aws/deep-learning-containers, huggingface/pytorch/inference/docker/2.6/py3/cu124/Dockerfile.gpu and
  .../2.6/py3/Dockerfile.cpu: at commit 38c1245333532ae6ce12deea0cd7e356531e3265 (2025-12-15, the last
  change of the transformers 4.51.3 build) and at ca82ce3f68926a9b457d87aed15647a670084ed8 (2026-05-14,
  the last change of the transformers 5.5.3 build, which replaced it in that path);
- the SDK's image table, sagemaker-core 2.27.0 `sagemaker/core/image_uri_config/huggingface.json`:
  inference "4.51.3" and "5.5.3", each "pytorch2.6.0" / py312, and the registry account per region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from restyle.errors import InvalidParameterError

HF_INFERENCE_REPOSITORY = "huggingface-pytorch-inference"


@dataclass(frozen=True)
class ServingImage:
    """One Hugging Face inference image: its tag and the versions inside it."""

    repository: str
    version: str  # "{torch}-transformers{transformers}", the part of the tag before the device
    python: str
    torch: str
    transformers: str
    huggingface_hub: str
    diffusers: str
    peft: str
    accelerate: str
    toolkit: str  # the pip requirement the image installs the inference toolkit from
    model_server: str  # multi-model-server
    setuptools: str  # what the check installs for sagemaker-inference's pkg_resources import

    def tag(self, device: str = "gpu") -> str:
        py = "py" + self.python.replace(".", "")
        middle = f"gpu-{py}-cu124" if device == "gpu" else f"cpu-{py}"
        return f"{self.version}-{middle}-ubuntu22.04"

    def uri(self, region: str, device: str = "gpu") -> str:
        return f"{registry(region)}/{self.repository}:{self.tag(device)}"


TRANSFORMERS_4 = ServingImage(
    repository=HF_INFERENCE_REPOSITORY,
    version="2.6.0-transformers4.51.3",
    python="3.12",
    torch="2.6.0",
    transformers="4.51.3",
    huggingface_hub="0.30.0",
    diffusers="0.33.1",
    peft="0.14.0",
    accelerate="1.6.0",
    toolkit="sagemaker-huggingface-inference-toolkit==2.6.0",
    model_server="1.1.11",
    setuptools="setuptools>=70,<82",  # the Dockerfile asks >=70; 82 dropped pkg_resources
)
TRANSFORMERS_5 = ServingImage(
    repository=HF_INFERENCE_REPOSITORY,
    version="2.6.0-transformers5.5.3",
    python="3.12",
    torch="2.6.0",
    transformers="5.5.3",
    huggingface_hub="1.10.0",
    diffusers="0.38.0",
    peft="0.18.1",
    accelerate="1.12.0",
    # the unreleased 2.7.0, from git: 2.6.0 does not import under transformers 5
    toolkit="git+https://github.com/aws/sagemaker-huggingface-inference-toolkit.git@f0c3eb2",
    model_server="1.1.11",
    setuptools="setuptools>=81,<82",  # the Dockerfile asks >=81; 82 dropped pkg_resources
)
IMAGES = {image.transformers: image for image in (TRANSFORMERS_4, TRANSFORMERS_5)}
TARGET = TRANSFORMERS_4  # deploy's default: the one whose every Python piece the container check runs
INFERENCE_LIBRARY = "sagemaker-inference==1.10.1"  # the images install the latest; this is it

# The deep-learning-container registries (account per region), from the SDK's table.
REGISTRIES = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
    "us-iso-east-1": "886529160074",
    "us-isob-east-1": "094389454867",
}
MAIN_REGISTRY = "763104351884"  # every other region the SDK lists
MAIN_REGIONS = frozenset(
    {
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "eu-central-1",
        "eu-north-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    }
)
DLC_ACCOUNTS = frozenset({MAIN_REGISTRY, *REGISTRIES.values()})

# The oldest torch and Python the archive's pinned libraries and restyle accept
# (transformers 5.23 and diffusers 0.42 need torch>=2.6; restyle needs Python 3.11).
MIN_TORCH = (2, 6)
MIN_PYTHON = (3, 11)

TAG = re.compile(
    r"(?P<torch>\d+\.\d+\.\d+)-transformers(?P<transformers>\d+\.\d+\.\d+)-(?P<device>cpu|gpu)"
    r"-py(?P<py>\d)(?P<pyminor>\d+)(?:-(?P<cuda>cu\d+))?-(?P<os>[a-z]+[\d.]+)(?:-v[\d.]+)?"
)
URI = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.(?P<domain>[a-z0-9.]+)/(?P<repo>[^:@]+)"
    r"(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)


def registry(region: str) -> str:
    """The image registry host of a region; a region the SDK does not list is refused by name."""
    if region in REGISTRIES:
        account = REGISTRIES[region]
    elif region in MAIN_REGIONS:
        account = MAIN_REGISTRY
    else:
        raise InvalidParameterError(
            f"region: {region!r} has no Hugging Face inference image in the SDK's table; pass --image-uri",
            field="region",
        )
    domain = {"us-iso-east-1": "c2s.ic.gov", "us-isob-east-1": "sc2s.sgov.gov"}.get(
        region, "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    )
    return f"{account}.dkr.ecr.{region}.{domain}"


def has_gpu(instance_type: str) -> bool:
    """ml.g*/ml.p* instances have NVIDIA GPUs (ml.inf*/ml.trn* have Neuron cores, not CUDA)."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return family[:1] in ("g", "p")


def is_graviton(instance_type: str) -> bool:
    """ml.c7g, ml.m6gd, ml.r7g, ...: Arm CPUs (a 'g' after the generation), where x86 images do not run."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return not has_gpu(instance_type) and re.fullmatch(r"[a-z]+\d+g[a-z]*", family) is not None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2])


def check_image(image_uri: str, instance_type: str, region: str | None = None) -> str:
    """Refuse, naming what does not fit, an image the archive cannot run on; returns what it is.

    A Hugging Face inference image must have Python and torch new enough for the archive's pinned
    libraries and the device of the instance. Other deep-learning-container repositories are refused
    (code/inference.py is written for the Hugging Face toolkit). An image in your own registry is taken
    as restyle's bring-your-own-container image (the Dockerfile), which serves the archive itself.
    """
    match = URI.fullmatch(image_uri)
    if not match:
        raise InvalidParameterError(
            f"image_uri: {image_uri!r} is not an ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG)",
            field="image_uri",
        )
    repo, tag = match["repo"], match["tag"] or ""
    if region and match["region"] != region:
        raise InvalidParameterError(
            f"image_uri: the image is in {match['region']} but the endpoint is in {region}; SageMaker pulls "
            "an endpoint's image from its own region",
            field="image_uri",
        )
    if match["account"] not in DLC_ACCOUNTS:
        return "own image (restyle's Dockerfile: restyle serve on /opt/ml/model)"
    if repo != HF_INFERENCE_REPOSITORY:
        raise InvalidParameterError(
            f"image_uri: {repo} is not {HF_INFERENCE_REPOSITORY}, the image code/inference.py is written "
            f"for; use the default ({TARGET.tag()}) or restyle's own image (Dockerfile)",
            field="image_uri",
        )
    parts = TAG.fullmatch(tag)
    if not parts:
        raise InvalidParameterError(
            f"image_uri: tag {tag!r} is not a Hugging Face inference tag "
            "(TORCH-transformersVERSION-DEVICE-pyNN[-cuNNN]-OS)",
            field="image_uri",
        )
    python = (int(parts["py"]), int(parts["pyminor"]))
    if python < MIN_PYTHON:
        raise InvalidParameterError(
            f"image_uri: {tag} runs Python {python[0]}.{python[1]}; restyle's handler needs "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (default: {TARGET.tag()})",
            field="image_uri",
        )
    if _version(parts["torch"]) < MIN_TORCH:
        raise InvalidParameterError(
            f"image_uri: {tag} has torch {parts['torch']}; the archive's transformers and diffusers need "
            f"torch>={MIN_TORCH[0]}.{MIN_TORCH[1]} (default: {TARGET.tag()})",
            field="image_uri",
        )
    if is_graviton(instance_type):
        raise InvalidParameterError(
            f"image_uri: {instance_type} has Arm (Graviton) CPUs; the Hugging Face inference image is x86 "
            "only: pick an x86 instance (ml.c5, ml.m5, ...) or a GPU one",
            field="image_uri",
        )
    gpu = has_gpu(instance_type)
    if gpu != (parts["device"] == "gpu"):
        raise InvalidParameterError(
            f"image_uri: {tag} is the {parts['device']} image but {instance_type} "
            f"{'has' if gpu else 'has no'} GPU; use the {'gpu' if gpu else 'cpu'} tag",
            field="image_uri",
        )
    return f"Hugging Face inference image (torch {parts['torch']}, transformers {parts['transformers']})"


def default_image(region: str, instance_type: str) -> str:
    """The target image for the region, in the instance's device flavour."""
    return TARGET.uri(region, "gpu" if has_gpu(instance_type) else "cpu")
