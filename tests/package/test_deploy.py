"""`restyle deploy`: the endpoint and autoscaling configuration (dry run; nothing is sent)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restyle.cli import app
from restyle.errors import InvalidParameterError
from restyle.package.deploy import DeploySpec, plan

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


def test_plan_orders_the_calls_and_scales_on_invocations():
    calls = plan(
        DeploySpec(name="restyle-skirts", model_data="s3://b/k/model.tar.gz", role=ROLE, max_instances=4)
    )
    assert [c["operation"] for c in calls] == [
        "create_model",
        "create_endpoint_config",
        "create_endpoint",
        "register_scalable_target",
        "put_scaling_policy",
    ]
    model = calls[0]["params"]["PrimaryContainer"]
    assert (
        model["ModelDataUrl"] == "s3://b/k/model.tar.gz" and "huggingface-pytorch-inference" in model["Image"]
    )
    assert calls[3]["params"]["MaxCapacity"] == 4
    assert calls[3]["params"]["ResourceId"] == "endpoint/restyle-skirts/variant/AllTraffic"
    policy = calls[4]["params"]["TargetTrackingScalingPolicyConfiguration"]
    assert (
        policy["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )


@pytest.mark.parametrize(
    "over, field",
    [
        ({"model_data": "model.tar.gz"}, "model_data"),
        ({"role": "me"}, "role"),
        ({"name": "bad name"}, "name"),
        ({"min_instances": 3, "max_instances": 2}, "min_instances"),
    ],
)
def test_bad_specs_name_the_field(over, field):
    spec = DeploySpec(**{"name": "r", "model_data": "s3://b/model.tar.gz", "role": ROLE, **over})
    with pytest.raises(InvalidParameterError) as err:
        plan(spec)
    assert err.value.field == field


def test_cli_dry_run_prints_the_plan():
    result = CliRunner().invoke(app, ["deploy", "s3://b/model.tar.gz", "--role", ROLE, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[2]["params"]["EndpointName"] == "restyle"
