"""`restyle invoke`: call a running server's /invocations from the command line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import step_bar
from restyle.errors import InvalidParameterError

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def invoke(
    url: Annotated[str, typer.Argument(help="Server URL, e.g. http://127.0.0.1:8080")],
    image: Annotated[Path, typer.Argument(help="The photo.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to paint.")],
    mask: Annotated[Path | None, typer.Option(help="Mask image (white = repaint).")] = None,
    garment: Annotated[
        str | None, typer.Option("--garment", "-g", help="Or: garment text for the segmenter.")
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n")] = 2,
    steps: Annotated[int, typer.Option()] = 25,
    guidance: Annotated[float, typer.Option()] = 6.5,
    length: Annotated[int, typer.Option("--image-length", help="Long side of the results.")] = 512,
    seed: Annotated[int | None, typer.Option()] = None,
    style: Annotated[str | None, typer.Option(help="A LoRA style loaded by the server.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("out/invoke"),
    api_key: Annotated[str | None, typer.Option(envvar="RESTYLE_API_KEY")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 600.0,
) -> None:
    """Call a server's /invocations (the original contract) and save the images and a grid."""
    from restyle.client import Client, grid
    from restyle.images import load_image
    from restyle.outputs import save_png

    for name, path in (("IMAGE", image), ("--mask", mask)):
        if path is not None and not path.is_file():
            raise InvalidParameterError(f"{name}: no such file: {path}", field=name)
    photo = load_image(image, field="IMAGE")
    client = Client(url, api_key=api_key, timeout=timeout)
    with _job_progress(f"{num_images} image(s), {steps} steps at {length} px") as progress:
        images = client.invoke(
            image,
            prompt,
            mask=mask,
            garment=garment,
            num_images=num_images,
            steps=steps,
            guidance=guidance,
            image_length=length,
            seed=seed,
            style=style,
            progress=progress,
        )
    output.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(output / f"invoke-{i}.jpg")
    save_png(grid([photo, *images]), output / "invoke-grid.png")
    typer.echo(f"{len(images)} images -> {output} (grid: {output / 'invoke-grid.png'})")


@contextmanager
def _job_progress(what: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar fed with a server job's status: queue position, then denoising steps."""
    with step_bar() as bar:
        task = bar.add_task(f"Waiting for the server: {what}", total=None)

        def update(status: dict[str, Any]) -> None:
            if status.get("state") == "queued":
                ahead = status.get("position")
                bar.update(task, description=f"Queued ({ahead} ahead): {what}")
            elif status.get("total"):
                bar.update(
                    task, description=f"Generating {what}", completed=status["step"], total=status["total"]
                )

        yield update
