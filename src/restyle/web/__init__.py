"""The web studio: static files served by `restyle serve` at `/`; they talk only to the public /v1 API."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"  # index.html, studio.css and the ES modules (no build step)
