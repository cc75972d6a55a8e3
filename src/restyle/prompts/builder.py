"""Turn chosen fashion attributes and free text into an inpainting prompt and a negative prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from restyle.errors import InvalidParameterError
from restyle.prompts.vocabulary import DEFAULT_NEGATIVE, QUALITY_SUFFIX

MAX_PROMPT_CHARS = 1000  # CLIP reads 77 tokens; far longer text is a mistake, not a prompt


@dataclass(frozen=True)
class Prompt:
    """A positive prompt and the negative prompt that goes with it."""

    text: str
    negative: str = DEFAULT_NEGATIVE


def _clean(name: str, value: str | None) -> str:
    if value is None:
        return ""
    value = " ".join(str(value).split())
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidParameterError(
            f"{name}: {len(value)} characters; the limit is {MAX_PROMPT_CHARS}", field=name
        )
    return value


def build_prompt(
    *,
    garment: str | None = None,
    text: str | None = None,
    style: str | None = None,
    pattern: str | None = None,
    color: str | None = None,
    fabric: str | None = None,
    fit: str | None = None,
    length: str | None = None,
    subject: str | None = "a model wearing",
    quality: bool = True,
    negative: str | None = None,
) -> Prompt:
    """Compose a prompt such as "a model wearing a long A-line red linen skirt with florals, casual...".

    Any attribute may be free text; the vocabulary lists are suggestions, not a closed set.

    Args:
        garment: the new garment type ("skirt"); optional when `text` says it.
        text: free text added after the attributes ("casual vacation look").
        style, pattern, color, fabric, fit, length: attributes from `restyle.prompts.vocabulary`.
        subject: the leading words; None or "" leaves them out.
        quality: append the photographic quality suffix of the original design.
        negative: negative prompt; None gives the default one, "" none.

    Returns:
        The Prompt. Raises InvalidParameterError if nothing was given to describe.
    """
    parts = {
        k: _clean(k, v)
        for k, v in dict(
            garment=garment,
            text=text,
            style=style,
            pattern=pattern,
            color=color,
            fabric=fabric,
            fit=fit,
            length=length,
            subject=subject,
            negative=negative,
        ).items()
    }
    if not (parts["garment"] or parts["text"]):
        raise InvalidParameterError(
            "prompt: give a garment or a text describing the new look", field="prompt"
        )
    noun = " ".join(
        p
        for p in (
            parts["fit"],
            parts["length"],
            parts["style"],
            parts["color"],
            parts["fabric"],
            parts["garment"],
        )
        if p
    )
    words: list[str] = []
    if noun:
        if parts["pattern"] and parts["pattern"] != "solid":
            noun += f" with {parts['pattern']}"
        words.append(f"{parts['subject']} {noun}".strip() if parts["subject"] else noun)
    if parts["text"]:
        words.append(parts["text"])
    if quality:
        words.append(QUALITY_SUFFIX)
    neg = DEFAULT_NEGATIVE if negative is None else parts["negative"]
    return Prompt(text=", ".join(words), negative=neg)


KEEP = "Keep the person, the pose, the face and everything else as they are."


def build_instruction(target: str | list[str] | None = None, **attributes: Any) -> Prompt:
    """An edit instruction for instruction editors (Qwen-Image-Edit): "Replace the dress with a long red
    linen skirt, casual vacation look. Keep the person, ...".

    Args:
        target: what to change, as the garment prompt(s) of the mask ("the dress"); None: "the garment".
        **attributes: as `build_prompt` (garment, text, style, pattern, color, fabric, fit, length,
            negative); the subject and the quality suffix are left out, an editor needs neither.

    Returns:
        The Prompt. Raises InvalidParameterError if nothing was given to describe.
    """
    described = build_prompt(**attributes, subject=None, quality=False)
    names = [target] if isinstance(target, str) else list(target or [])
    what = " and ".join(_clean("garment", t) for t in names if t and t.strip()) or "the garment"
    return Prompt(text=f"Replace {what} with {described.text}. {KEEP}", negative=described.negative)
