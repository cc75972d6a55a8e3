"""`code/sitecustomize.py` in model.tar.gz: lets the released inference toolkit import under transformers 5.

sagemaker-huggingface-inference-toolkit 2.6.0 (the latest release on PyPI) runs
`from transformers.file_utils import is_tf_available, is_torch_available` when its handler service is
imported. transformers 5 dropped TensorFlow and, with it, `is_tf_available`, so that import fails and
every model-server worker dies before `code/inference.py` is read (huggingface/huggingface-inference-
toolkit#122). The toolkit puts `/opt/ml/model/code` on PYTHONPATH before it starts the model server, so
Python imports this file when each worker starts, before the handler service.

What it does, and nothing else:
- when `transformers.file_utils` is first imported and lacks `is_tf_available`, it adds one that returns
  False (true of every transformers 5: there is no TensorFlow backend), and says so on stderr;
- with a transformers that still has it (4.x), or a toolkit that no longer asks for it, it changes nothing;
- a `sitecustomize` the image itself has (later on sys.path) still runs: this file runs it, and says so;
- `RESTYLE_TOOLKIT_COMPAT=0` turns it off.

It imports only the standard library, so the `pip install -r requirements.txt` that runs with the same
PYTHONPATH pays nothing for it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

MODULE = "transformers.file_utils"
NOTICE = (
    "restyle (code/sitecustomize.py): transformers {version} has no is_tf_available; supplied one that "
    "returns False so the inference toolkit's handler imports (huggingface-inference-toolkit#122)"
)


def _is_tf_available() -> bool:
    """transformers 5 has no TensorFlow backend."""
    return False


class _AddIsTfAvailable(importlib.abc.Loader):
    """Runs the real loader of transformers.file_utils, then adds `is_tf_available` when it is missing.
    Everything else (get_source, is_package, ...) is the real loader's."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self.real, "create_module", None)
        return create(spec) if create else None

    def exec_module(self, module: ModuleType) -> None:
        self.real.exec_module(module)
        if not hasattr(module, "is_tf_available"):
            module.is_tf_available = _is_tf_available  # type: ignore[attr-defined]
            version = getattr(sys.modules.get("transformers"), "__version__", "?")
            print(NOTICE.format(version=version), file=sys.stderr, flush=True)
        _remove_finder()  # the module is loaded: nothing more to do


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, FileUtilsFinder)]


class FileUtilsFinder(importlib.abc.MetaPathFinder):
    """Finds transformers.file_utils through the other finders and wraps its loader, until it is loaded
    (a `find_spec` that does not load it, e.g. importlib.util.find_spec, leaves the finder in place)."""

    _busy = False

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != MODULE or FileUtilsFinder._busy:
            return None
        FileUtilsFinder._busy = True  # the real finders below must not come back here
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            FileUtilsFinder._busy = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _AddIsTfAvailable(spec.loader)
        return spec


def _run_next_sitecustomize() -> None:
    """Run the image's own sitecustomize, if one sits later on sys.path (ours must not hide it)."""
    here = Path(__file__).resolve().parent
    for entry in sys.path:
        try:
            folder = Path(entry or ".").resolve()
        except OSError:
            continue
        candidate = folder / "sitecustomize.py"
        if folder == here or not candidate.is_file():
            continue
        spec = importlib.util.spec_from_file_location("_image_sitecustomize", candidate)
        if spec is None or spec.loader is None:
            return
        print(f"restyle (code/sitecustomize.py): also running {candidate}", file=sys.stderr, flush=True)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return


def install() -> None:
    """Put the finder first on sys.meta_path (unless RESTYLE_TOOLKIT_COMPAT=0 or it is already there)."""
    if os.environ.get("RESTYLE_TOOLKIT_COMPAT", "1") == "0":
        return
    if MODULE in sys.modules or any(isinstance(f, FileUtilsFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, FileUtilsFinder())


if __name__ == "sitecustomize":  # imported by Python at start-up from /opt/ml/model/code
    install()
    _run_next_sitecustomize()
