"""`restyle deploy`: a SageMaker real-time endpoint for a model.tar.gz."""

from __future__ import annotations

from typing import Annotated

import typer

from restyle.cli.base import print_json

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def deploy(
    model_data: Annotated[str, typer.Argument(help="s3://bucket/path/model.tar.gz")],
    role: Annotated[str, typer.Option(help="IAM role ARN for SageMaker.")],
    name: Annotated[str, typer.Option(help="Model / endpoint name.")] = "restyle",
    region: Annotated[str, typer.Option()] = "us-east-1",
    instance_type: Annotated[str, typer.Option()] = "ml.g5.xlarge",
    image_uri: Annotated[
        str | None,
        typer.Option(
            help="Serving image (default: the Hugging Face PyTorch inference image, torch 2.6 / "
            "transformers 4.51.3 build, gpu or cpu as the instance is), or restyle's own (Dockerfile) "
            "in your registry."
        ),
    ] = None,
    min_instances: Annotated[int, typer.Option()] = 1,
    max_instances: Annotated[int, typer.Option()] = 2,
    target_invocations: Annotated[
        int, typer.Option(help="Per instance per minute; autoscaling target.")
    ] = 20,
    workers: Annotated[
        int, typer.Option(help="Model-server workers per instance: one per GPU of --instance-type.")
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the API calls; send nothing.")] = False,
) -> None:
    """Create a real-time endpoint (model, endpoint config, endpoint, autoscaling) for a model.tar.gz."""
    from restyle.package.deploy import CAVEATS, DeploySpec, apply, plan
    from restyle.package.images import check_image

    spec = DeploySpec(
        name=name,
        model_data=model_data,
        role=role,
        region=region,
        instance_type=instance_type,
        image_uri=image_uri,
        min_instances=min_instances,
        max_instances=max_instances,
        target_invocations=target_invocations,
        workers=workers,
    )
    calls = plan(spec)
    what = check_image(spec.image(), spec.instance_type, spec.region)
    typer.echo(f"image: {spec.image()} ({what})", err=True)
    for caveat in CAVEATS:
        typer.echo(f"note: {caveat}", err=True)
    if dry_run:
        print_json(calls)
        return
    apply(spec)
    typer.echo(f"endpoint {name} is InService in {region}")
