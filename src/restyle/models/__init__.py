"""Model building (tiny preview models) and resolution (folder or hub cache)."""

from restyle.models.hub import Resolved, is_available, load_pretrained, pull, resolve_or_preview
from restyle.models.tiny import build_tiny_models, is_tiny

__all__ = [
    "Resolved",
    "build_tiny_models",
    "is_available",
    "is_tiny",
    "load_pretrained",
    "pull",
    "resolve_or_preview",
]
