"""CLIP's byte-level BPE tokenizer as Hugging Face files (vocab.json + merges.txt), from its merges list.

OpenAI's `clip` package ships the BPE as `bpe_simple_vocab_16e6.txt.gz`: a version line, then 262,144
merges of which CLIP uses the first 48,894. Hugging Face repos ship `vocab.json` + `merges.txt` ("#version"
line, the same 48,894 merges). The vocabulary follows from the merges as `clip/simple_tokenizer.py` builds
it: the 256 byte symbols, the same with `</w>`, one token per merge, then <|startoftext|> and <|endoftext|>
(49,408 tokens). Written as transformers writes it, this is byte for byte the vocab.json of the SD 2 / SD 1.5
inpainting and CLIPSeg repos (see published/SOURCES.md).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from restyle.errors import InvalidParameterError

CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48,894: simple_tokenizer.py's merges[1:49152-256-2+1]
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
PUBLISHED = Path(__file__).with_name("published")
CLIP_BPE_MERGES = PUBLISHED / "clip-bpe-merges.txt.gz"  # the published merges.txt, gzipped
TOKENIZER_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")


def bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's (and GPT-2's) order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable + [256 + i for i in range(len(extra))]]


def read_merges(path: str | Path, field: str = "processor_from") -> list[str]:
    """The 48,894 merges CLIP uses, from `bpe_simple_vocab_16e6.txt.gz` or a `merges.txt` (plain or gzip).

    Raises:
        InvalidParameterError: naming `field` when the file is missing or not a CLIP merges list.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidParameterError(f"{field}: no such file: {path}", field=field)
    raw = path.read_bytes()
    try:
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InvalidParameterError(
            f"{field}: {path} is not a CLIP BPE file (bpe_simple_vocab_16e6.txt.gz or merges.txt): {err}",
            field=field,
        ) from err
    merges = text.split("\n")[1 : 1 + CLIP_MERGES]  # line 0 is the version line
    bad = next((i for i, m in enumerate(merges) if len(m.split()) != 2), None)
    if len(merges) < CLIP_MERGES or bad is not None:
        why = f"line {bad + 2} is not a merge" if bad is not None else f"{len(merges)} merges"
        raise InvalidParameterError(
            f"{field}: {path} is not a CLIP BPE file ({why}; CLIP uses {CLIP_MERGES}); pass the clip "
            "package's bpe_simple_vocab_16e6.txt.gz or a CLIP tokenizer's merges.txt",
            field=field,
        )
    return merges


def clip_vocab(merges: list[str]) -> dict[str, int]:
    """Token -> id, built from the merges exactly as OpenAI's simple_tokenizer.py builds its encoder."""
    symbols = bytes_to_unicode()
    words = [s + "</w>" for s in symbols]  # a symbol that ends a word
    tokens = [*symbols, *words, *("".join(m.split()) for m in merges), *SPECIAL_TOKENS]
    return {t: i for i, t in enumerate(tokens)}


def write_clip_tokenizer(out: str | Path, config_from: Path, merges: list[str] | None = None) -> Path:
    """Write a CLIPTokenizer folder: vocab.json + merges.txt, and the tokenizer configs of `config_from`.

    Args:
        out: folder to write (created).
        config_from: a published tokenizer folder whose tokenizer_config.json / special_tokens_map.json
            are copied as they are (SD 2 pads with "!", SD 1.5 and CLIPSeg with <|endoftext|>).
        merges: the merges to use (default: the published ones restyle ships).

    Returns:
        `out`, loadable with `CLIPTokenizer.from_pretrained`.
    """
    merges = read_merges(CLIP_BPE_MERGES) if merges is None else merges
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = json.dumps(clip_vocab(merges), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (out / "vocab.json").write_bytes(vocab.encode("utf-8"))  # bytes: no newline translation anywhere
    (out / "merges.txt").write_bytes(("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"))
    for name in TOKENIZER_CONFIGS:
        shutil.copyfile(config_from / name, out / name)
    return out
