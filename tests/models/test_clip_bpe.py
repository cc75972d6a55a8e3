"""CLIP's BPE files from a merges list, as OpenAI's simple_tokenizer.py and the published repos have them."""

import gzip

import pytest

from restyle.errors import InvalidParameterError
from restyle.models.clip_bpe import (
    CLIP_BPE_MERGES,
    CLIP_MERGES,
    CLIP_VOCAB_SIZE,
    bytes_to_unicode,
    clip_vocab,
    read_merges,
)


def test_vocabulary_is_laid_out_as_simple_tokenizer_builds_it():
    merges = read_merges(CLIP_BPE_MERGES)
    vocab = clip_vocab(merges)
    assert len(merges) == CLIP_MERGES == 48894 and len(vocab) == CLIP_VOCAB_SIZE == 49408
    symbols = bytes_to_unicode()
    assert len(set(symbols)) == 256 and vocab[symbols[0]] == 0 and vocab["!</w>"] == 256
    assert vocab["".join(merges[0].split())] == 512  # the first merge ("i n") right after the 512 symbols
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)


def test_plain_and_gzip_merges_read_alike(tmp_path):
    merges = read_merges(CLIP_BPE_MERGES)
    plain = tmp_path / "merges.txt"
    plain.write_bytes(gzip.decompress(CLIP_BPE_MERGES.read_bytes()))
    assert read_merges(plain) == merges


def test_missing_file_names_the_field(tmp_path):
    with pytest.raises(InvalidParameterError, match="bpe: no such file") as err:
        read_merges(tmp_path / "nope.txt.gz", "bpe")
    assert err.value.field == "bpe"


def test_a_line_that_is_not_a_merge_is_named(tmp_path):
    lines = gzip.decompress(CLIP_BPE_MERGES.read_bytes()).decode().split("\n")
    lines[10] = "not a merge"
    bad = tmp_path / "merges.txt"
    bad.write_text("\n".join(lines))
    with pytest.raises(InvalidParameterError, match="line 11 is not a merge"):
        read_merges(bad)
