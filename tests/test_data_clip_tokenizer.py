"""`data/clip_tokenizer.py` on a tiny vocabulary file in CLIP's format; the ids are worked out by hand.

The real `bpe_simple_vocab_16e6.txt.gz` is not shipped; `benchmarks/clip_parity.py` checks the
ids against open_clip's tokenizer on it (needs open_clip).

Ids of the tiny vocabulary: the 256 byte symbols (printable ASCII byte b has id b − 33), the same
with `</w>` (+256), one per merge from 512 in file order, then start 522 and end 523.
"""

import doctest
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from portrait_keras.data import clip_tokenizer
from portrait_keras.data.clip_tokenizer import ClipTokenizer, byte_symbols, clean_text, split_words

MERGES = [
    "h e",  # 512 he
    "l l",  # 513 ll
    "ll o</w>",  # 514 llo</w>
    "he llo</w>",  # 515 hello</w>
    "w o",  # 516 wo
    "r l",  # 517 rl
    "wo rl",  # 518 worl
    "worl d</w>",  # 519 world</w>
    "' s</w>",  # 520 's</w>
    "o r",  # 521 or (ranked after w o and r l)
]
SOT, EOT = 522, 523


def sym(char, end=False):
    """Id of a printable ASCII character's byte symbol."""
    return ord(char) - 33 + (256 if end else 0)


def write_vocabulary(path, merges=MERGES, header="#version: 0.2"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join([header, *merges]) + "\n")
    return path


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
    return write_vocabulary(tmp_path_factory.mktemp("clip_vocab") / "bpe_tiny.txt.gz")


@pytest.fixture(scope="module")
def tokenizer(vocabulary):
    return ClipTokenizer(vocabulary, context_length=8)


def test_vocabulary_layout(tokenizer):
    assert tokenizer.vocabulary_size == 524
    assert (tokenizer.start_of_text_id, tokenizer.end_of_text_id) == (SOT, EOT)
    assert tokenizer.vocabulary["a"] == 64 and tokenizer.vocabulary["a</w>"] == 320  # "a" is 320 in CLIP too
    assert tokenizer.vocabulary["hello</w>"] == 515 and tokenizer.vocabulary["or"] == 521
    symbols = byte_symbols()
    assert sorted(symbols) == list(range(256)) and len(set(symbols.values())) == 256
    assert not any(s.isspace() for s in symbols.values())


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [515, 519]),
        ("hell", [512, sym("l"), sym("l", end=True)]),  # "l l" is a merge, "l l</w>" is not
        ("world", [519]),  # w-o (rank 4) before o-r (rank 9): "or" never forms
        ("ord", [521, sym("d", end=True)]),
        ("orld", [sym("o"), 517, sym("d", end=True)]),  # r-l (rank 5) first, though o-r is further left
        ("or", [sym("o"), sym("r", end=True)]),
        ("it's", [sym("i"), sym("t", end=True), 520]),
        ("42", [sym("4", end=True), sym("2", end=True)]),  # digits one by one
        ("hello, world!", [515, sym(",", end=True), 519, sym("!", end=True)]),
        ("é", [127, 358]),  # UTF-8 c3 a9: symbols 'Ã' (id 127) and '©' (id 102) + </w>
        ("  HELLO\t\n  World  ", [515, 519]),
        ("hello <|endoftext|>", [515, EOT]),
        ("", []),
    ],
)
def test_encode(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids


def test_batch_has_start_end_and_zero_padding(tokenizer):
    rows = tokenizer(["Hello world", "it's"])
    assert rows.dtype == np.int32 and rows.shape == (2, 8)
    assert rows.tolist() == [
        [SOT, 515, 519, EOT, 0, 0, 0, 0],
        [SOT, sym("i"), sym("t", end=True), 520, EOT, 0, 0, 0],
    ]
    assert tokenizer("hello").tolist() == [[SOT, 515, EOT, 0, 0, 0, 0, 0]]  # one text: a batch of one


def test_truncation_keeps_the_end_token(tokenizer):
    assert tokenizer("hello world", context_length=4).tolist() == [[SOT, 515, 519, EOT]]  # fits exactly
    assert tokenizer("hello world hello world", context_length=4).tolist() == [[SOT, 515, 519, EOT]]
    assert tokenizer(["hello " * 20], context_length=6)[0, -1] == EOT
    with pytest.raises(ValueError, match="5 tokens with start and end, more than the context length 4"):
        tokenizer("hello world hello", context_length=4, truncate=False)


def test_decode(tokenizer):
    text = tokenizer.decode([SOT, 515, sym(",", end=True), 519, EOT, 0])
    assert text == "<|startoftext|>hello , world <|endoftext|>!"  # padding 0 is the byte "!", as in CLIP
    assert tokenizer.decode(tokenizer.encode("Café naïve 東京")) == "café naïve 東京 "
    assert tokenizer.decode([127]) == "\ufffd"  # half of a UTF-8 character
    with pytest.raises(ValueError, match=r"\[0, 524\)"):
        tokenizer.decode([524])


def test_fewer_merges_give_a_smaller_vocabulary(vocabulary):
    tokenizer = ClipTokenizer(vocabulary, num_merges=2)
    assert tokenizer.vocabulary_size == 516 and tokenizer.end_of_text_id == 515
    assert tokenizer.encode("hello") == [512, 513, sym("o", end=True)]


def test_clean_text_without_ftfy(monkeypatch):
    monkeypatch.setattr(clip_tokenizer, "ftfy", None)
    assert clean_text("Cafe\u0301") == "caf\u00e9"  # NFC
    assert clean_text("&lt;b&gt; Fish &amp;amp; Chips\u00a0 ") == "<b> fish & chips"  # HTML unescaped twice
    assert clean_text("\u201cquoted\u201d") == "\u201cquoted\u201d"  # ftfy would straighten these


def test_clean_text_uses_ftfy_when_installed(monkeypatch):
    class FakeFtfy:
        @staticmethod
        def fix_text(text):
            return text.replace("\u201c", '"').replace("\u201d", '"')

    monkeypatch.setattr(clip_tokenizer, "ftfy", FakeFtfy)
    assert clean_text("\u201cQuoted\u201d") == '"quoted"'


SPLIT_CASES = [
    "it's a dog's life, isn't it? 'tis",
    "!'s '''s x''y a'b 'LL",
    "km/h 3.14 1,000 ²³ ٣٤ x²",
    "東京タワー 😀👍 naïve café",
    "<|startoftext|>hi<|endoftext|>there !<|endoftext|>",
    "<|endoftext",
    "e\u0301 \u200b zero\u200bwidth",
    "tab\tnew\nline  spaces",
    "__init__ a_b --flag=1",
]


@pytest.mark.parametrize("text", SPLIT_CASES)
def test_split_words_is_clips_pattern(text):
    regex = pytest.importorskip("regex")
    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    assert split_words(text) == pattern.findall(text)


def test_split_words_by_hand():
    assert split_words("don't!! 'tis 42") == ["don", "'t", "!!", "'t", "is", "4", "2"]
    assert split_words("a!'s") == ["a", "!'", "s"]  # a run of punctuation swallows the apostrophe


@pytest.mark.parametrize(
    "write, match",
    [
        (lambda p: None, "No such vocabulary file.*open_clip"),
        (lambda p: p.write_text("#version: 0.2\nh e\n"), "Expected gzip-compressed UTF-8 text"),
        (lambda p: write_vocabulary(p, ["h e", "l l x"]), r"bad\.txt\.gz:3: a merge is two symbols.*'l l x'"),
        (lambda p: write_vocabulary(p, ["h e", "", "l l"]), r"bad\.txt\.gz:3: blank line among the merges"),
        (lambda p: write_vocabulary(p, ["h e", "h e"]), "repeats an existing token.*'he'"),
    ],
    ids=["missing", "not_gzip", "three_symbols", "blank_line", "repeated"],
)
def test_bad_vocabulary_file(tmp_path, write, match):
    path = tmp_path / "bad.txt.gz"
    write(path)
    with pytest.raises(ValueError, match=match):
        ClipTokenizer(path)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda v: ClipTokenizer(v, context_length=1), "context_length must be an int >= 2"),
        (lambda v: ClipTokenizer(v, num_merges=-1), "num_merges must be an int >= 0"),
        (lambda v: ClipTokenizer(v)("x", context_length=1), "context_length must be an int >= 2"),
        (lambda v: ClipTokenizer(v).encode(b"bytes"), "text must be a str"),
    ],
)
def test_arguments_are_checked(vocabulary, call, match):
    with pytest.raises(ValueError, match=match):
        call(vocabulary)


def test_docstring_examples_run():
    assert doctest.testmod(clip_tokenizer, optionflags=doctest.ELLIPSIS).failed == 0


def test_imports_no_tensorflow_keras_torch_or_regex(vocabulary):
    code = (
        "import sys; from portrait_keras.data.clip_tokenizer import ClipTokenizer\n"
        "ClipTokenizer(sys.argv[1])('a photo')\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'regex') if m in sys.modules))"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    result = subprocess.run([sys.executable, "-c", code, str(vocabulary)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
