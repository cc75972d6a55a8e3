"""The tensors of a TorchScript archive (`torch.jit.save`), read without running any of its code.

OpenAI publishes CLIP as TorchScript (`ViT-B-16.pt`). `torch.jit.load` would compile and run the code the
archive carries, and `torch.load(weights_only=True)` refuses TorchScript. The archive is a zip:
`<name>/data.pkl` pickles the module tree (one object per module, its attributes in a dict) and every
tensor's bytes sit in `<name>/data/<key>`. Here data.pkl goes through a restricted unpickler: TorchScript
classes become inert placeholders that only keep their attributes, tensors are rebuilt from the zip's
records with plain `torch.frombuffer` + `as_strided`, and any other global (a function, a class) stops the
read. Nothing in the archive is imported, compiled or called.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

from restyle.errors import ModelLoadError

_DTYPES = {  # storage class name -> torch dtype name
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


def is_torchscript(path: str | Path) -> bool:
    """True for a `torch.jit.save` archive (a zip with constants.pkl, as torch itself tells them apart)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") for name in zf.namelist())


class _Module:
    """Stands in for a TorchScript class: keeps the attributes it was pickled with, has no code."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Storage:
    __slots__ = ("dtype",)

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


class _RebuildTensor:
    """torch._utils._rebuild_tensor(_v2) and _rebuild_parameter, on a flat tensor of the storage's bytes."""

    __slots__ = ("parameter",)

    def __init__(self, parameter: bool) -> None:
        self.parameter = parameter

    def __call__(self, data: Any, *args: Any) -> Any:
        import torch

        if self.parameter:  # (tensor, requires_grad, hooks): the tensor is all a state dict needs
            return data
        offset, size, stride = args[:3]
        if not isinstance(data, torch.Tensor):
            raise pickle.UnpicklingError("a tensor without a storage record")
        return data.as_strided(tuple(size), tuple(stride), offset)


class _Unpickler(pickle.Unpickler):
    def __init__(self, zf: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(zf.read(f"{prefix}data.pkl")))
        self.zf, self.prefix = zf, prefix
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        import collections

        import torch

        if module == "__torch__" or module.startswith("__torch__."):
            return _Module
        if module == "torch._utils" and name in {"_rebuild_tensor", "_rebuild_tensor_v2"}:
            return _RebuildTensor(parameter=False)
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _RebuildTensor(parameter=True)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _DTYPES:
            return _Storage(getattr(torch, _DTYPES[name]))
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown record {pid!r:.60}")
        _, storage, key, _location, numel = pid  # location ignored: everything is read onto the CPU
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a storage of unknown type")
        if key not in self.storages:
            raw = bytearray(self.zf.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=storage.dtype) if raw else torch.empty(0, dtype=storage.dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(f"record data/{key} holds {flat.numel()} values, not {numel}")
            self.storages[key] = flat
        return self.storages[key]


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    import torch

    state = obj.state if isinstance(obj, _Module) else None
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, _Module):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_state(path: str | Path, field: str) -> dict[str, Any]:
    """Every tensor attribute of a TorchScript archive's module tree, by dotted name (as `state_dict()`).

    Raises:
        ModelLoadError: naming `field`, when the archive holds anything but modules and tensors.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        roots = [n[: -len("data.pkl")] for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise ModelLoadError(f"{field}: {path} has no single data.pkl: not TorchScript", field=field)
        prefix = roots[0]
        order = zf.read(f"{prefix}byteorder").decode() if f"{prefix}byteorder" in zf.namelist() else "little"
        if order != sys.byteorder:
            raise ModelLoadError(f"{field}: {path} is {order}-endian; this machine is not", field=field)
        try:
            root = _Unpickler(zf, prefix).load()
        except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError, KeyError, EOFError) as err:
            raise ModelLoadError(
                f"{field}: {path} is a TorchScript archive restyle cannot read without running it ({err}); "
                "pass a plain state dict or a transformers folder",
                field=field,
            ) from err
    out: dict[str, Any] = {}
    _flatten(root, "", out)
    return out
