"""Model resolution: a local folder or a hub id in the Hugging Face cache, with errors that say what to do.

Loading never downloads by surprise: weights come from a folder or from the local cache that
`restyle models pull` fills. Set RESTYLE_ALLOW_DOWNLOAD=1 to let `from_pretrained` fetch on first use.

Hub ids withdrawn by their publishers keep working: a withdrawn id and its live copy are aliases, so a
cache entry under either id serves both (local folders are never aliased).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from restyle.config import ModelConfig
from restyle.errors import ModelLoadError, ModelNotFoundError

ROLES = {
    # role -> (CLI flag, env variable, what the folder must hold)
    "segmenter": ("--segmenter", "RESTYLE_SEGMENTER", "a transformers CLIPSeg folder"),
    "inpainter": ("--inpainter", "RESTYLE_INPAINTER", "a diffusers inpainting pipeline folder"),
}
# Withdrawn hub id -> its live copy (same files, same snapshot layout). The copies are community mirrors,
# not the original publishers: stabilityai withdrew SD 2 (Nov 2025), runwayml deleted its repos (2024).
MIRRORS = {
    "stabilityai/stable-diffusion-2-inpainting": "sd2-community/stable-diffusion-2-inpainting",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}
_ALIASES = {**MIRRORS, **{new: old for old, new in MIRRORS.items()}}  # both directions
log = logging.getLogger("restyle.models")


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "org/name" or a legacy "name"


def _looks_like_path(model_id: str) -> bool:
    """True for anything that cannot be a hub id: `./x`, `/x`, `~/x`, `a/b/c`, `skirt-model/`, `C:\\x`."""
    return model_id.startswith((".", "/", "~")) or not _REPO_ID.match(model_id)


def downloads_allowed() -> bool:
    """True when RESTYLE_ALLOW_DOWNLOAD is set and the hub is not switched off (HF_HUB_OFFLINE)."""
    off = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    return not off and os.environ.get("RESTYLE_ALLOW_DOWNLOAD", "").lower() in {"1", "true", "yes", "on"}


def aliases(model_id: str) -> tuple[str, ...]:
    """The hub ids whose cache entry may hold `model_id`'s files, in lookup order: itself, then its alias.

    A folder (or anything that looks like a path) has no alias.
    """
    if _looks_like_path(model_id) or Path(model_id).expanduser().is_dir():
        return (model_id,)
    alias = _ALIASES.get(model_id.lower())
    return (model_id, alias) if alias else (model_id,)


def live_id(model_id: str) -> str:
    """The id to fetch `model_id` from the hub with: a withdrawn id's live copy, else the id itself."""
    return MIRRORS.get(model_id.lower(), model_id)


def not_found_message(role: str, model_id: str) -> str:
    flag, env, what = ROLES[role]
    also = "".join(f" (nor under its alias '{a}')" for a in aliases(model_id)[1:])
    return (
        f"{role} '{model_id}' is not available: it is not a local folder and its weights are not in the "
        f"Hugging Face cache{also}. Fix it one of two ways: run `restyle models pull {flag} "
        f"{live_id(model_id)}` on a machine that reaches the hub, or point {flag} (or {env}) at {what}."
    )


def _say_alias(role: str, model_id: str, used: str, cached: bool = True) -> None:
    """Say which cache entry (or repo) serves `model_id` (a warning, so a default CLI or server shows it)."""
    why = "community mirror" if used in MIRRORS.values() else "old id alias"
    how = "using cached" if cached else "fetching"
    log.warning("%s '%s': %s '%s' (%s)", role, model_id, how, used, why)


def load_pretrained(cls: Any, model_id: str, role: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(model_id)` from a folder or the local cache; errors become RestyleErrors.

    Args:
        cls: a transformers/diffusers class with `from_pretrained`.
        model_id: hub id ("org/name") or a folder path.
        role: "segmenter" or "inpainter", for the messages.
        **kwargs: passed to `from_pretrained` (torch_dtype, ...).
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        try:
            return cls.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(
                f"{role} '{model_id}': the folder exists but does not load as {ROLES[role][2]}: {err}"
            ) from err
    check_folder(role, model_id)
    online = downloads_allowed()
    found = resolve_cached(model_id)
    target = found or (live_id(model_id) if online else model_id)  # nothing cached: fetch the live repo
    if target != model_id:
        _say_alias(role, model_id, target, cached=found is not None)
    local_only = not online or target.lower() in MIRRORS  # a withdrawn id: its cache entry is all there is
    try:
        return cls.from_pretrained(target, local_files_only=local_only, **kwargs)
    except OSError as err:
        raise ModelNotFoundError(not_found_message(role, model_id)) from err


def _in_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(model_id, name), str)
        for name in ("model_index.json", "config.json")
    )


def resolve_cached(model_id: str) -> str | None:
    """The id to load `model_id` from without the hub: itself or an alias, whichever is cached first.

    Returns:
        `model_id` for a folder or a cached hub id, the alias whose cache entry exists, else None.
    """
    if Path(model_id).expanduser().is_dir():
        return model_id
    if _looks_like_path(model_id):
        return None
    return next((m for m in aliases(model_id) if _in_cache(m)), None)


def is_available(model_id: str) -> bool:
    """Cheap check: a folder, or a hub id whose config (or its alias's) is in the local cache."""
    return resolve_cached(model_id) is not None


_WANTED = (".json", ".txt", ".model", ".safetensors", ".bin")  # configs, tokenizers, weights
_DUPLICATES = (".fp16.", "non_ema")  # variants of weights the default layout already has
_NEVER_LOADED = ("safety_checker",)  # components restyle loads as None (SD 1.5's is 1.2 GB)


def _folder(name: str) -> str:
    return name.rpartition("/")[0]


def download_patterns(files: list[str]) -> list[str]:
    """Which files of a hub repo to fetch: the loadable layout only, not every checkpoint beside it.

    Diffusers repos (model_index.json) get their component folders, not root-level single-file checkpoints,
    fp16/non-EMA duplicates or the safety checker (restyle loads pipelines with `safety_checker=None`; the
    small feature_extractor/ config stays); transformers repos get their root files. Safetensors are
    preferred; .bin weights are fetched only where a folder has no safetensors.
    """
    diffusers_layout = "model_index.json" in files

    def in_layout(name: str) -> bool:
        if diffusers_layout:
            folder = _folder(name)
            return name == "model_index.json" or (
                bool(folder) and "/" not in folder and folder not in _NEVER_LOADED
            )
        return "/" not in name

    candidates = [
        f for f in files if f.endswith(_WANTED) and not any(d in f for d in _DUPLICATES) and in_layout(f)
    ]
    with_safetensors = {_folder(f) for f in candidates if f.endswith(".safetensors")}
    return [f for f in candidates if not (f.endswith(".bin") and _folder(f) in with_safetensors)]


def _check_hub_reachable() -> None:
    """Fail in one line, before the hub client's retries, when the hub is switched off or unknown here."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    advice = (
        "pull on a machine that reaches it and copy the cache, or point --segmenter/--inpainter at folders"
    )
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(f"cannot download: HF_HUB_OFFLINE is set; unset it, or {advice}")
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    proxies = urllib.request.getproxies()
    if (proxies.get("https") or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return  # only the proxy resolves the hub's name here; the hub client goes through it
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        raise ModelNotFoundError(f"cannot reach the hub ({host}: {err.strerror or err}); {advice}") from None


def pull(model_id: str) -> str:
    """Download a hub model's loadable files into the Hugging Face cache; returns the snapshot folder.

    A withdrawn id fetches its live copy, whose cache entry then serves the withdrawn id too.
    """
    from huggingface_hub import HfApi, snapshot_download

    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    _check_hub_reachable()
    repo = live_id(model_id)
    if repo != model_id:
        log.warning("'%s' is withdrawn from the hub; pulling its community mirror '%s'", model_id, repo)
    try:
        files = HfApi().list_repo_files(repo)
        return str(snapshot_download(repo, allow_patterns=download_patterns(files)))
    except Exception as err:  # the hub client raises many types; all mean "could not fetch"
        raise ModelNotFoundError(f"could not download '{repo}' from the hub: {err}") from err


def cache_dir() -> Path:
    """restyle's own cache (tiny preview models): $RESTYLE_CACHE, else ~/.cache/restyle."""
    env = os.environ.get("RESTYLE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "restyle"


def names_a_folder(model_id: str) -> bool:
    """True when `model_id` is meant as a local path: path-shaped, an existing file, or `org/name` whose
    `org` is a folder here (`models/inpainterr`). Such an id never falls back to the preview."""
    path = Path(model_id).expanduser()
    return _looks_like_path(model_id) or path.exists() or ("/" in model_id and path.parent.is_dir())


def check_folder(role: str, model_id: str, flag: str | None = None) -> None:
    """A local model that is not a folder here is an error naming it (a typo must not become a preview)."""
    flag = flag or ROLES[role][0]
    if names_a_folder(model_id) and not Path(model_id).expanduser().is_dir():
        what = "not a folder" if Path(model_id).expanduser().exists() else "no such folder"
        raise ModelNotFoundError(f"{role} '{model_id}': {what}. Point {flag} at {ROLES[role][2]}.")


def preview_notice(missing: tuple[str, ...]) -> str:
    """What every entry point says when it falls back to the tiny-model preview."""
    return (
        f"PREVIEW MODE: {', '.join(missing)} not available here, so restyle runs tiny randomly "
        "initialised models in their place (a tiny segmenter's masks are placeholder shapes, a tiny "
        "inpainter's pictures noise-like); they only show the flow works. For real results run "
        "`restyle models pull` where the hub is reachable, or pass "
        "--segmenter/--inpainter folders (or RESTYLE_SEGMENTER/RESTYLE_INPAINTER)."
    )


@dataclass(frozen=True)
class Resolved:
    """The model configuration to run, and whether it is the tiny-model preview."""

    config: ModelConfig
    preview: bool
    missing: tuple[str, ...] = ()  # the real models that were not available


def resolve_or_preview(config: ModelConfig) -> Resolved:
    """Use the configured models when available; otherwise fall back to tiny models (preview mode).

    The returned config names the ids actually found (a cached alias in place of the configured id), so
    what the server and CLI show is what runs. The tiny models are built once into `cache_dir()/tiny`
    (a few seconds, about 21 MB).
    """
    from restyle.models.tiny import build_tiny_models, is_current_tiny

    for role in ROLES:
        check_folder(role, getattr(config, role))
    found = {role: resolve_cached(getattr(config, role)) for role in ROLES}
    missing = tuple(getattr(config, role) for role, used in found.items() if used is None)
    if not missing:
        for role, used in found.items():
            if used != getattr(config, role):
                _say_alias(role, getattr(config, role), str(used))
        cfg = replace(config, segmenter=str(found["segmenter"]), inpainter=str(found["inpainter"]))
        return Resolved(cfg, preview=False)
    tiny = cache_dir() / "tiny"
    if not all(is_current_tiny(tiny / part) for part in ("segmenter", "inpainter")):  # else stale: rebuild
        build_tiny_models(tiny)
    # only the missing role is swapped for its tiny model: a real segmenter given with no inpainter on this
    # machine still masks for real (`restyle mask --segmenter DIR`), and the other way round
    seg, inp = found["segmenter"], found["inpainter"]
    cfg = replace(
        config,
        segmenter=str(seg) if seg is not None else str(tiny / "segmenter"),
        inpainter=str(inp) if inp is not None else str(tiny / "inpainter"),
    )
    return Resolved(cfg, preview=True, missing=missing)
