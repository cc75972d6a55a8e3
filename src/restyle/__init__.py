"""restyle: text-driven virtual fashion styling.

The heavy parts (torch, transformers, diffusers) are imported lazily so that `import restyle`
and `restyle --help` stay instant.
"""

from restyle.errors import RestyleError

__version__ = "0.1.0"
__all__ = ["RestyleError", "__version__"]
