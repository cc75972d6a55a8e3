"""restyle: text-driven virtual fashion styling.

The heavy parts (torch, transformers, diffusers) are imported lazily so that `import restyle`
and `restyle --help` stay instant.
"""

import logging

from restyle.errors import RestyleError

__version__ = "0.1.0"
__all__ = ["RestyleError", "__version__"]


class _DropOptionalKernelNotice(logging.Filter):
    """bitsandbytes' CPU backend warns on import that an optional 4-bit kernel package is missing.

    diffusers imports bitsandbytes whenever it is installed, so every command printed that line although
    restyle never runs 4-bit layers (8-bit Adam does not use that kernel). Only that one notice is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "gemm_4bit_forward" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropOptionalKernelNotice())
