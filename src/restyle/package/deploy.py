"""SageMaker real-time endpoint configuration for a model.tar.gz, with target-tracking autoscaling.

`plan()` is pure (it builds the API requests); `apply()` sends them with boto3
(`pip install restyle[sagemaker]`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from restyle.errors import InvalidParameterError
from restyle.package.images import check_image, default_image

REALTIME_RESPONSE_MB = 6  # a real-time endpoint drops larger answers; the handler refuses them first
CAVEATS = (
    "A real-time endpoint answers at most 6 MB: the handler refuses a larger answer with a message "
    "naming num_images_per_prompt (RESTYLE_MAX_RESPONSE_MB); ask for fewer or smaller images, or JPEG.",
    "Each model-server worker loads every model: SAGEMAKER_MODEL_SERVER_WORKERS is --workers "
    "(one per GPU of the instance).",
)


@dataclass(frozen=True)
class DeploySpec:
    """One endpoint: where the archive is, what runs it, how it scales."""

    name: str  # model, endpoint config and endpoint are named from it
    model_data: str  # s3://bucket/key/model.tar.gz
    role: str  # IAM role ARN SageMaker assumes to read the archive
    region: str = "us-east-1"
    instance_type: str = "ml.g5.xlarge"  # one A10G; the original used ml.g4dn (T4)
    image_uri: str | None = None  # default: images.TARGET in `region`, gpu or cpu as the instance is
    min_instances: int = 1
    max_instances: int = 2
    target_invocations: int = 20  # per instance per minute before another instance is added
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60
    timeout_s: int = 300  # model server response timeout
    workers: int = 1  # model-server workers per instance: one per GPU (each holds a copy of the models)

    def check(self) -> None:
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,50}", self.name):
            raise InvalidParameterError(
                f"name: {self.name!r} must be letters, digits and '-' (<= 51)", field="name"
            )
        if not self.model_data.startswith("s3://") or not self.model_data.endswith(".tar.gz"):
            raise InvalidParameterError(
                "model_data: expected s3://bucket/path/model.tar.gz", field="model_data"
            )
        if not self.role.startswith("arn:"):
            raise InvalidParameterError(
                "role: expected an IAM role ARN (arn:aws:iam::...:role/...)", field="role"
            )
        if not 1 <= self.min_instances <= self.max_instances:
            raise InvalidParameterError(
                f"instances: need 1 <= min ({self.min_instances}) <= max ({self.max_instances})",
                field="min_instances",
            )
        if self.workers < 1:
            raise InvalidParameterError("workers: must be at least 1 (one per GPU)", field="workers")
        if self.target_invocations < 1:
            raise InvalidParameterError("target_invocations: must be at least 1", field="target_invocations")
        check_image(self.image(), self.instance_type, self.region)

    def image(self) -> str:
        return self.image_uri or default_image(self.region, self.instance_type)


def plan(spec: DeploySpec) -> list[dict[str, Any]]:
    """The API calls, in order: [{"service", "operation", "params"}, ...]."""
    spec.check()
    image = spec.image()
    variant = "AllTraffic"
    resource = f"endpoint/{spec.name}/variant/{variant}"
    env = {
        "HF_HUB_OFFLINE": "1",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(spec.timeout_s),
        "TS_DEFAULT_RESPONSE_TIMEOUT": str(spec.timeout_s),
        "MMS_DEFAULT_RESPONSE_TIMEOUT": str(spec.timeout_s),
        # the model server starts one worker per CPU by default, each loading every model: one per GPU
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(spec.workers),
        "RESTYLE_MAX_RESPONSE_MB": str(REALTIME_RESPONSE_MB),
    }
    return [
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": spec.name,
                "ExecutionRoleArn": spec.role,
                "PrimaryContainer": {"Image": image, "ModelDataUrl": spec.model_data, "Environment": env},
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint_config",
            "params": {
                "EndpointConfigName": spec.name,
                "ProductionVariants": [
                    {
                        "VariantName": variant,
                        "ModelName": spec.name,
                        "InstanceType": spec.instance_type,
                        "InitialInstanceCount": spec.min_instances,
                        # weights load and warm up before /ping turns 200
                        "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                        "ModelDataDownloadTimeoutInSeconds": 1200,
                    }
                ],
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint",
            "params": {"EndpointName": spec.name, "EndpointConfigName": spec.name},
        },
        {
            "service": "application-autoscaling",
            "operation": "register_scalable_target",
            "params": {
                "ServiceNamespace": "sagemaker",
                "ResourceId": resource,
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "MinCapacity": spec.min_instances,
                "MaxCapacity": spec.max_instances,
            },
        },
        {
            "service": "application-autoscaling",
            "operation": "put_scaling_policy",
            "params": {
                "PolicyName": f"{spec.name}-invocations",
                "ServiceNamespace": "sagemaker",
                "ResourceId": resource,
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": float(spec.target_invocations),
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "ScaleInCooldown": spec.scale_in_cooldown_s,
                    "ScaleOutCooldown": spec.scale_out_cooldown_s,
                },
            },
        },
    ]


def apply(spec: DeploySpec, wait: bool = True) -> None:
    """Send the planned calls with boto3; waits for the endpoint to be InService before autoscaling."""
    try:
        import boto3
    except ImportError as err:
        raise InvalidParameterError(
            "deploy: boto3 is not installed; `pip install 'restyle[sagemaker]'` (or use --dry-run)"
        ) from err
    clients: dict[str, Any] = {}
    for call in plan(spec):
        client = clients.setdefault(call["service"], boto3.client(call["service"], region_name=spec.region))
        if call["operation"] == "register_scalable_target" and wait:
            clients["sagemaker"].get_waiter("endpoint_in_service").wait(EndpointName=spec.name)
        getattr(client, call["operation"])(**call["params"])
