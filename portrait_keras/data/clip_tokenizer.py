"""CLIP's byte-level BPE tokenizer (paper §6.3: text prompts such as "A photo of a man with a black
backpack."), in plain Python: no TensorFlow, no torch, no new dependency.

It reads the vocabulary file that ships with OpenAI CLIP (`clip/bpe_simple_vocab_16e6.txt.gz`) and
open_clip (`open_clip/bpe_simple_vocab_16e6.txt.gz`); nothing is downloaded. With open_clip
installed somewhere, `python -c "import open_clip.tokenizer as t; print(t.default_bpe())"` prints
its path; the file is also in the OpenAI CLIP repository.

The file is gzip-compressed UTF-8 text: a header line (`#version: 0.2`), then one merge per line,
two symbols separated by a space, best merge first. The vocabulary is built as OpenAI CLIP builds
it: the 256 byte symbols, the same 256 with `</w>` (end of word), one token per merge (the first
48,894 merges of the real file), then `<|startoftext|>` and `<|endoftext|>` (ids 49406 and 49407
with the real file). Every byte has a symbol, so no text is out of vocabulary.

Encoding a text:

1. Cleaning, as open_clip's default `clean="lower"`: `ftfy.fix_text` if ftfy is installed, HTML
   entities unescaped twice, surrounding whitespace stripped, every run of whitespace made one
   space, lower case. Without ftfy (it is not a dependency) the text is only NFC-normalised in its
   place, so broken encodings ("cafÃ©"), curly quotes, ligatures and full-width characters are
   left as they are and may give other tokens than CLIP's; plain ASCII text, and any text ftfy
   would leave alone, gives the same tokens either way.
2. Splitting into pieces by CLIP's pattern
   `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`:
   the special token names, English contractions, runs of letters, single digits, runs of other
   non-space characters. The `regex` module is not needed: letters and numbers are Unicode
   categories L* and N* from Python's `unicodedata` (a character newer than its Unicode version
   may be classed differently). `<|startoftext|>` / `<|endoftext|>` typed in a text become those
   tokens, as in OpenAI CLIP; open_clip spells them `<start_of_text>` / `<end_of_text>` there
   (same ids), so only that typed string tokenises differently from open_clip.
3. Each piece as UTF-8 bytes, each byte as its symbol, `</w>` on the last one, then merged by
   rank (lowest first, every non-overlapping occurrence left to right) until no pair is a merge.

A batch is `[<|startoftext|>] + tokens + [<|endoftext|>]`, zero-padded to the context length
(77 for every released CLIP). A longer text is cut to the context length with `<|endoftext|>` as
its last token (open_clip's behaviour; OpenAI's `clip.tokenize(truncate=True)`), or refused with
`truncate=False` (OpenAI's default). The text tower pools at the highest id of each row, the
`<|endoftext|>` token.
"""

import gzip
import html
import os
import unicodedata

import numpy as np

try:  # optional: CLIP's own cleaning step; see the module docstring for what differs without it
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
CONTEXT_LENGTH = 77
# OpenAI CLIP keeps the first 49152 - 256 - 2 lines of the merges, so its vocabulary has 49408 tokens.
NUM_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
VOCABULARY_HELP = (
    "CLIP's vocabulary bpe_simple_vocab_16e6.txt.gz ships with OpenAI CLIP (clip/) and open_clip "
    '(`python -c "import open_clip.tokenizer as t; print(t.default_bpe())"` prints its path); '
    "nothing is downloaded"
)


def byte_symbols():
    """The 256 byte symbols of CLIP's BPE: byte value → one printable character.

    Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves; the other 68 bytes
    (controls, space, soft hyphen) get the characters from U+0100 on, in byte order, so no symbol
    is whitespace or a control character.

    Returns:
        dict int → str, in the order of the vocabulary's first 256 ids.

    Example:
    >>> symbols = byte_symbols()
    >>> symbols[ord("a")], symbols[ord(" ")], list(symbols)[:2], len(symbols)
    ('a', 'Ġ', [33, 34], 256)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + i) for i, b in enumerate(others)})
    return symbols


def clean_text(text):
    """CLIP's text cleaning (open_clip `clean="lower"`); see the module docstring for ftfy.

    Example:
    >>> clean_text("  A  Photo&amp;amp;\\tof\\nA MAN ")
    'a photo& of a man'
    """
    text = ftfy.fix_text(text) if ftfy is not None else unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


def _kind(char):
    category = unicodedata.category(char)
    return "letter" if category[0] == "L" else "number" if category[0] == "N" else "other"


def split_words(text):
    """Cut cleaned text into CLIP's pre-tokenizer pieces (module docstring, step 2).

    Args:
        text: str. Cleaned text (`clean_text`): lower case, single spaces.

    Returns:
        list of str. The pieces in order; spaces are dropped.

    Example:
    >>> split_words("it's 42 km/h!! <|endoftext|>")
    ['it', "'s", '4', '2', 'km', '/', 'h', '!!', '<|endoftext|>']
    """
    pieces, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        # The pattern's alternatives in order: the first that matches here wins.
        special = next((s for s in (START_OF_TEXT, END_OF_TEXT) if text[i : i + len(s)].lower() == s), None)
        contraction = next((c for c in CONTRACTIONS if text[i : i + len(c)].lower() == c), None)
        kind = _kind(text[i])
        if special or contraction:
            end = i + len(special or contraction)
        elif kind == "number":
            end = i + 1
        else:
            end = i + 1
            while end < n and not text[end].isspace() and _kind(text[end]) == kind:
                end += 1
        pieces.append(text[i:end])
        i = end
    return pieces


def read_merges(path, num_merges=NUM_MERGES):
    """The merges of a CLIP vocabulary file, best first.

    Args:
        path: str. A `bpe_simple_vocab_16e6.txt.gz`-style file (module docstring).
        num_merges: int. How many merges to keep at most. Defaults to `48894`, as CLIP.

    Returns:
        list of (str, str).

    Raises:
        ValueError: the file is missing, not gzip UTF-8 text, or a merge line is not two symbols
            (the line number and text are named).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such vocabulary file ({VOCABULARY_HELP}). Received: {path!r}")
    try:
        with gzip.open(path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"Expected gzip-compressed UTF-8 text ({e}; {VOCABULARY_HELP}). Received: {path!r}") from None
    merges = []
    # Line 1 is the header; blank lines after the last merge are a trailing newline.
    for number, line in enumerate(lines[1 : num_merges + 1], start=2):
        if not line.strip():
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}:{number}: blank line among the merges. Received: {line!r}")
            break
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f"{path}:{number}: a merge is two symbols separated by a space. Received: {line!r}")
        merges.append(pair)
    return merges


def learn_merges(texts, num_merges=None):
    """BPE merges learned from `texts` (Sennrich et al. 2016), for a small vocabulary of one's own.

    The pieces of every text (`clean_text`, `split_words`) as byte symbols with `</w>` on the
    last, as `ClipTokenizer.bpe` starts; then repeatedly the most frequent adjacent pair over all
    pieces (counted once per occurrence, ties broken by the pair's text) becomes a merge and is
    applied everywhere, until every piece is one token or `num_merges` are learned. So a toy text
    tower reads the words of its captions as single tokens (`write_vocabulary`).

    Args:
        texts: iterable of str.
        num_merges: int or None. At most this many merges. Defaults to `None` (until every
            piece is one token).

    Returns:
        list of (str, str), best first.

    Example:
    >>> learn_merges(["a tall man", "a tall woman"])[:3]  # each pair twice; ties by their text
    [('a', 'l'), ('a', 'n</w>'), ('al', 'l</w>')]
    """
    symbols = byte_symbols()
    counts = {}
    for text in texts:
        for piece in split_words(clean_text(text)):
            if piece not in (START_OF_TEXT, END_OF_TEXT):
                counts[piece] = counts.get(piece, 0) + 1
    words = []
    for piece, count in sorted(counts.items()):
        word = [symbols[b] for b in piece.encode("utf-8")]
        word[-1] += END_OF_WORD
        words.append((word, count))
    merges = []
    while num_merges is None or len(merges) < num_merges:
        pairs = {}
        for word, count in words:
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, _ in words:
            i = 0
            while i < len(word) - 1:
                if (word[i], word[i + 1]) == best:
                    word[i : i + 2] = [word[i] + word[i + 1]]
                i += 1
    return merges


def write_vocabulary(path, merges):
    """Write `merges` as a vocabulary file `ClipTokenizer` reads (gzip UTF-8, header line first).

    Args:
        path: str. Output file, e.g. `toy_vocab.txt.gz`.
        merges: sequence of (str, str). E.g. `learn_merges(captions)`.

    Returns:
        str. `path`.
    """
    path = os.fspath(path)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(["#version: 0.2", *(f"{a} {b}" for a, b in merges)]) + "\n")
    return path


class ClipTokenizer:
    """CLIP's BPE tokenizer (OpenAI CLIP `SimpleTokenizer`, open_clip `SimpleTokenizer`).

    Paper reference: §6.3 (CLIP ViT-B/16, text search by prompts).

    Args:
        vocabulary_path: str. Path of `bpe_simple_vocab_16e6.txt.gz` (module docstring), or a file
            in the same format.
        context_length: int. Length of every row `__call__` returns. Defaults to `77`.
        num_merges: int. Merges read from the file at most. Defaults to `48894`, as CLIP.

    Attributes:
        vocabulary: dict str → int. Token → id.
        start_of_text_id, end_of_text_id: int. Ids of `<|startoftext|>` and `<|endoftext|>`
            (the last two ids).
        vocabulary_size: int. 49408 with the real file.

    Example:
    >>> tokenizer = ClipTokenizer("bpe_simple_vocab_16e6.txt.gz")  # doctest: +SKIP
    >>> tokenizer(["a photo of a man with a black backpack."])[0, :13].tolist()  # doctest: +SKIP
    [49406, 320, 1125, 539, 320, 786, 593, 320, 1449, 14894, 269, 49407, 0]
    """

    def __init__(self, vocabulary_path, context_length=CONTEXT_LENGTH, num_merges=NUM_MERGES):
        if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 2:
            raise ValueError(
                f"context_length must be an int >= 2 (room for the start and end tokens). "
                f"Received: context_length={context_length!r}"
            )
        if not isinstance(num_merges, int) or isinstance(num_merges, bool) or num_merges < 0:
            raise ValueError(f"num_merges must be an int >= 0. Received: num_merges={num_merges!r}")
        self.vocabulary_path = os.fspath(vocabulary_path)
        self.context_length = context_length
        merges = read_merges(self.vocabulary_path, num_merges)
        self._byte_symbols = byte_symbols()
        self._symbol_bytes = {s: b for b, s in self._byte_symbols.items()}
        symbols = list(self._byte_symbols.values())
        tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
        tokens += [START_OF_TEXT, END_OF_TEXT]
        self.vocabulary = {}
        for token in tokens:
            if token in self.vocabulary:
                raise ValueError(f"{self.vocabulary_path}: a merge repeats an existing token. Received: {token!r}")
            self.vocabulary[token] = len(self.vocabulary)
        self._tokens = tokens
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache = {}
        self.start_of_text_id = self.vocabulary[START_OF_TEXT]
        self.end_of_text_id = self.vocabulary[END_OF_TEXT]
        self.vocabulary_size = len(tokens)

    def bpe(self, piece):
        """The BPE tokens of one pre-tokenizer piece (module docstring, step 3).

        Args:
            piece: str. One piece of `split_words`.

        Returns:
            tuple of str. Vocabulary tokens; the last ends in `</w>` (special tokens as they are).
        """
        if piece in (START_OF_TEXT, END_OF_TEXT):
            return (piece,)
        if piece not in self._cache:
            word = [self._byte_symbols[b] for b in piece.encode("utf-8")]
            word[-1] += END_OF_WORD
            while len(word) > 1:
                ranked = [(self._ranks[p], p) for p in zip(word, word[1:]) if p in self._ranks]
                if not ranked:
                    break
                best = min(ranked)[1]
                merged, i = [], 0
                while i < len(word):
                    if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                        merged.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        merged.append(word[i])
                        i += 1
                word = merged
            self._cache[piece] = tuple(word)
        return self._cache[piece]

    def encode(self, text):
        """Token ids of `text`, without the start and end tokens.

        Args:
            text: str. Any text; cleaned first (`clean_text`).

        Returns:
            list of int.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str. Received: text={text!r}")
        return [self.vocabulary[token] for piece in split_words(clean_text(text)) for token in self.bpe(piece)]

    def decode(self, token_ids):
        """Text of token ids: `</w>` becomes a space; special tokens stay as their names.

        Padding is not removed: id 0 is the byte `!`, as in CLIP.

        Args:
            token_ids: sequence of int. Ids below `vocabulary_size`.

        Returns:
            str. Invalid UTF-8 (a cut multi-byte character) is replaced by U+FFFD.
        """
        ids = [int(i) for i in token_ids]
        bad = [i for i in ids if not 0 <= i < self.vocabulary_size]
        if bad:
            raise ValueError(f"Token ids must be in [0, {self.vocabulary_size}). Received: {bad}")
        text = "".join(self._tokens[i] for i in ids)
        data = bytes(self._symbol_bytes[c] for c in text)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def __call__(self, texts, context_length=None, truncate=True):
        """Token ids of a batch of texts, `[N, context_length]`, ready for the text tower.

        Args:
            texts: str or sequence of str. One text is a batch of one.
            context_length: int or None. Row length. Defaults to `None` (the tokenizer's).
            truncate: bool. Cut a text that does not fit, keeping `<|endoftext|>` last; with
                `False`, raise instead. Defaults to `True`.

        Returns:
            numpy int32 array `[N, context_length]`: start token, tokens, end token, zeros.

        Raises:
            ValueError: a text does not fit and `truncate` is `False`.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        length = self.context_length if context_length is None else context_length
        if not isinstance(length, int) or isinstance(length, bool) or length < 2:
            raise ValueError(f"context_length must be an int >= 2. Received: context_length={context_length!r}")
        rows = np.zeros((len(texts), length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.start_of_text_id, *self.encode(text), self.end_of_text_id]
            if len(ids) > length:
                if not truncate:
                    raise ValueError(
                        f"Text {row} has {len(ids)} tokens with start and end, more than the context length "
                        f"{length} (pass truncate=True to cut it). Received: {text!r}"
                    )
                ids = ids[: length - 1] + [self.end_of_text_id]
            rows[row, : len(ids)] = ids
        return rows
