"""The bring-your-own-container entry point: SageMaker starts the image as `docker run IMAGE serve`.

It runs `restyle serve` on the contract's terms: every interface, port 8080 (`SAGEMAKER_BIND_TO_PORT`
where SageMaker sets it), the model folder SageMaker extracted model.tar.gz into (/opt/ml/model), its
response timeout and payload limit from the environment. /ping stays 503 until the models are loaded and
warmed up, and every status code and error body is restyle's own.

    python -m restyle.serve.container serve [more `restyle serve` options]
"""

from __future__ import annotations

import os
import sys

MODEL_DIR = "/opt/ml/model"  # where SageMaker extracts ModelDataUrl
# SageMaker's environment -> `restyle serve` option, with the default it takes when the variable is unset
SETTINGS = (
    ("SAGEMAKER_BIND_TO_PORT", "--port", "8080"),
    ("RESTYLE_MODEL_DIR", "--model-dir", MODEL_DIR),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "--timeout", "300"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "--max-body-mb", "6"),
    ("RESTYLE_MAX_RESPONSE_MB", "--max-response-mb", "6"),  # the real-time endpoint's answer limit
    ("RESTYLE_OUTPUT", "--output", "/tmp/restyle"),
)


def serve_args(extra: list[str], env: os._Environ[str] | dict[str, str] = os.environ) -> list[str]:
    """The `restyle serve` command line the container runs (options given after `serve` come last)."""
    args = ["serve", "--host", "0.0.0.0", "--gateway"]
    for variable, option, default in SETTINGS:
        args += [option, env.get(variable) or default]
    return args + extra


def main(argv: list[str] | None = None) -> None:
    """`serve` starts the server; anything else is refused in one line (SageMaker only ever sends serve)."""
    from restyle.cli import main as cli_main

    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["serve"]:
        print(
            f"Error: this image serves models: start it as `IMAGE serve` (SageMaker does), got {args[:1]}",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.argv = ["restyle", *serve_args(args[1:])]
    cli_main()


if __name__ == "__main__":
    main()
