"""Read and validate an annotation table: one CSV row per image, one column per task.

Columns (header on line 1):

| column       | content                                                             |
|--------------|---------------------------------------------------------------------|
| `path`       | image path relative to the dataset root (no `..`, no absolute path)   |
| `split`      | `train`, `query` or `gallery` (paper §4.1)                           |
| `id`         | integer identity, `-1` = unknown (paper §4.2, "semi-supervised ID")  |
| single tasks | one class name of the schema, empty = unknown                        |
| multi tasks  | `;`-separated class names (e.g. `happy;surprise`), empty = unknown   |
| `source`     | optional: movie or camera stream the image comes from               |
| `frame`      | optional integer frame number, empty = none                          |
| `camera`     | optional integer camera, `-1` or empty = none                        |
| `group`      | optional integer near-duplicate group (paper §4.3), `-1` or empty = none |
| `mask`       | optional person mask image (white = person), relative like `path`; empty = none |

Task column names come from the schema (`default_schema()` unless a `schema.json` sits
beside the CSV). Every row is checked, and one `AnnotationError` lists every problem as
`FILE:LINE: column 'x': value 'v': what was expected`.
"""

import copy
import csv
import difflib
import itertools
import os
import posixpath

import numpy as np
import pandas as pd

from portrait_keras import schema as schema_lib

SPLITS = ("train", "query", "gallery")
TEST_SPLITS = ("query", "gallery")
OPTIONAL_INT_COLUMNS = ("frame", "camera", "group")
BACKGROUNDS = schema_lib.BACKGROUNDS  # how a masked image's background is shown (`with_background`)
UNKNOWN = -1
# The message shows this many problems; `AnnotationError.problems` keeps all of them.
MAX_LISTED = 50

# [0-9], not \d: \d also matches digits like '٣' that pd.to_numeric rejects. 18 digits fit int64.
_INT_PATTERN = r"-?[0-9]{1,18}"
# Characters of an undecodable line quoted back in a problem, around the bad bytes.
_SHOWN_CHARS = 80
# The last line `csv.reader` sees, after the file: a record of its own, or the end of the last
# field when a quote is still open. Private-use characters that no annotation holds.
_END = "\ue000end of file\ue000\n"


class AnnotationError(ValueError):
    """Problems found in an annotation CSV, all of them at once.

    Args:
        csv_path: path-like. The annotation file.
        problems: list of `(line, column, value, message)`; `line` is the line in the
            CSV file (the header is line 1).

    Attributes:
        csv_path: str. The annotation file.
        problems: list of `(line, column, value, message)`, sorted by line.
    """

    def __init__(self, csv_path, problems):
        self.csv_path = os.fspath(csv_path)
        self.problems = sorted(problems, key=lambda p: p[0])
        lines = [
            f"{self.csv_path}:{line}: column {column!r}: value {value!r}: {message}"
            for line, column, value, message in self.problems[:MAX_LISTED]
        ]
        more = len(self.problems) - MAX_LISTED
        if more > 0:
            lines.append(f"... and {more} more (see AnnotationError.problems)")
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in {self.csv_path}:\n" + "\n".join(lines))


class Annotations:
    """A validated annotation table with labels encoded per split.

    Built by `read_annotations`; see `docs/design.md` for the contract.

    Attributes:
        schema: `Schema`. The tasks the table is labelled with.
        root: str. Absolute dataset root; `path` values are relative to it.
        csv_path: str. The annotation file.
        table: `pandas.DataFrame`. The CSV as strings (spaces after commas dropped), one
            row per image, indexed by the CSV line its record starts on (`table.index.name == "line"`).
        splits: tuple of str. The splits that have rows, in `train, query, gallery` order.
        train_ids: int64 `[num_ids]`. Sorted known identities of the train split: the
            re-id classes (a training label is the index into this array).
        background: str. How `make_dataset` shows the background of images with a mask:
            `"keep"` (default), `"mean"` or `"blur"` (`with_background`).

    Example:
    >>> ann = read_annotations("annotations.csv")  # doctest: +SKIP
    >>> ann.labels("train")["age"][:3]  # doctest: +SKIP
    array([2, -1, 4], dtype=int32)
    """

    def __init__(self, schema, root, csv_path, table, encoded, schema_source="given"):
        self.schema = schema
        # Where the schema came from: "given", "schema.json", "default" (every default task
        # column present) or "columns" (the default tasks whose columns the CSV has).
        self.schema_source = schema_source
        self.root = root
        self.csv_path = csv_path
        self.table = table
        self._encoded = encoded
        self.background = "keep"  # `with_background`
        split = table["split"].to_numpy()
        self._rows = {s: np.flatnonzero(split == s) for s in SPLITS}
        self.splits = tuple(s for s in SPLITS if self._rows[s].size)
        identity = schema.identity_task
        if identity is None:
            self.train_ids = np.zeros([0], np.int64)
        else:
            ids = encoded[identity.name][self._rows["train"]]
            self.train_ids = np.unique(ids[ids != UNKNOWN])

    def __len__(self):
        return len(self.table)

    def __repr__(self):
        sizes = ", ".join(f"{s}={self.num_images(s)}" for s in self.splits)
        return f"Annotations({self.csv_path!r}, {sizes}, train_ids={self.train_ids.size})"

    def rows(self, split):
        """Positions (int64 `[n]`) of the split's rows in `table`, in file order."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}. Allowed: {', '.join(SPLITS)}")
        rows = self._rows[split]
        if not rows.size:
            present = ", ".join(self.splits) or "none"
            raise AnnotationError(
                self.csv_path,
                [(1, "split", split, f"no rows in this split (splits present: {present})")],
            )
        return rows

    def num_images(self, split):
        """Number of images in `split` (0 when the split is absent)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}. Allowed: {', '.join(SPLITS)}")
        return int(self._rows[split].size)

    def labels(self, split):
        """Labels of `split`, a dict keyed by task name, in file order.

        - identity task: int64 `[n]`, the raw id, `-1` unknown;
        - single-label task: int32 `[n]`, class index, `-1` unknown;
        - multi-label task: float32 `[n, C]` multi-hot, a row of `-1` when unknown.
        """
        rows = self.rows(split)
        return {t.name: self._encoded[t.name][rows] for t in self.schema.tasks}

    def paths(self, split):
        """Absolute image paths of `split` (object array of str `[n]`), in file order."""
        return self._encoded["path"][self.rows(split)]

    def with_background(self, background):
        """These annotations with the images' background (where the `mask` column says) shown as
        `background`: `"keep"`, `"mean"` or `"blur"` (`pipeline.remove_background`, paper 002
        §6.3). `make_dataset` reads it, so training and evaluation see the same images.

        Returns: a shallow copy (the tables are shared) with `background` set.
        """
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}. Received: background={background!r}")
        other = copy.copy(self)
        other.background = background
        return other

    def masks(self, split):
        """Absolute person-mask paths (object array of str `[n]`, `""` none), in file order."""
        return self._encoded["mask"][self.rows(split)]

    @property
    def has_masks(self):
        """Whether any row has a person mask (the optional `mask` column)."""
        return bool((self._encoded["mask"] != "").any())

    def groups(self, split):
        """Near-duplicate group per image (int64 `[n]`, `-1` none), paper §4.3."""
        return self._encoded["group"][self.rows(split)]

    def cameras(self, split):
        """Camera per image (int64 `[n]`, `-1` none)."""
        return self._encoded["camera"][self.rows(split)]

    def frames(self, split):
        """Frame number per image (int64 `[n]`, `-1` none)."""
        return self._encoded["frame"][self.rows(split)]


def read_annotations(csv_path, root=None, schema=None, *, required_splits=()):
    """Read, validate and encode an annotation CSV.

    Args:
        csv_path: path-like. The annotation file (format in the module docstring).
        root: path-like. Folder the `path` column is relative to. Defaults to the
            CSV's folder.
        schema: `Schema`. The tasks and class lists. Defaults to the `schema.json`
            beside the CSV when there is one, else the tasks of `default_schema()` whose
            columns the CSV has (a re-id CSV of `path,split,id` has the identity task alone;
            `Annotations.schema_source` says which).
        required_splits: iterable of str. Splits that must have at least one row.

    Returns:
        `Annotations`.

    Raises:
        AnnotationError: listing every problem found, each as
            `FILE:LINE: column 'x': value 'v': what was expected`.
        SchemaError: the `schema.json` beside the CSV (read when `schema` is None) is not a
            valid schema; the message names it.
    """
    csv_path = os.fspath(csv_path)
    source = "given"
    if schema is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "schema.json")
        source = "schema.json" if os.path.exists(beside) else "default"
        schema = schema_lib.Schema.load(beside) if source == "schema.json" else schema_lib.default_schema()
    root = os.path.abspath(os.path.dirname(os.path.abspath(csv_path)) if root is None else os.fspath(root))
    for split in required_splits:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}. Allowed: {', '.join(SPLITS)}")

    table = read_table(csv_path)
    if source == "default":
        # No schema.json: the CSV's task columns decide the tasks (none at all is still an error).
        present = [name for name in schema.names if name in table.columns]
        if present and len(present) < len(schema.names):
            schema, source = schema.subset(present), "columns"
    problems = []
    _check_columns(table, schema, problems)
    encoded = {}
    present = set(table.columns)
    if "path" in present:
        encoded["path"] = _check_paths(table["path"], root, problems)
    encoded["mask"] = _check_masks(table, root, problems) if "mask" in present else np.full(len(table), "", object)
    if "split" in present:
        _check_choice(table, "split", SPLITS, False, problems)
        split_ok = table["split"].isin(SPLITS)
        for split in required_splits:
            if not (table["split"] == split).any():
                problems.append((1, "split", split, f"no rows in split {split!r}, which is required"))
    for column in OPTIONAL_INT_COLUMNS:
        encoded[column] = (
            _check_int(table, column, True, problems)
            if column in present
            else (np.full([len(table)], UNKNOWN, np.int64))
        )
    for task in schema.tasks:
        if task.name not in present:
            continue
        if task.kind == schema_lib.IDENTITY:
            encoded[task.name] = _check_int(table, task.name, False, problems)
            if "split" in present:
                _check_id_splits(table, task.name, encoded[task.name], split_ok, problems)
        elif task.kind == schema_lib.SINGLE:
            encoded[task.name] = _check_choice(table, task.name, task.classes, True, problems)
        else:
            encoded[task.name] = _check_multi(table, task.name, task.classes, problems)
    if problems:
        raise AnnotationError(csv_path, problems)
    return Annotations(schema, root, csv_path, table, encoded, schema_source=source)


def read_table(csv_path):
    """The CSV as a string DataFrame indexed by the line each record starts on.

    The file is parsed once, by `csv.reader`. Blank records are dropped. Column names are
    stripped (a blank one is named `Unnamed: N`, N counted from 0); cells are kept as written
    (spaces after commas dropped).

    Args:
        csv_path: path-like. The annotation file.

    Returns:
        `pandas.DataFrame` of str, `index.name == "line"` (the header is line 1).

    Raises:
        AnnotationError: when the file is empty or not UTF-8, the header is blank or names a
            column twice, records have more or fewer fields than the header (every such
            record), a field is over `csv.field_size_limit()` or a quote is still open at the
            end of the file.
    """
    csv_path = os.fspath(csv_path)
    names, lines, records = _parse_records(csv_path)
    return pd.DataFrame(records, index=pd.Index(np.asarray(lines, np.int64), name="line"), columns=names, dtype=str)


def _parse_records(csv_path):
    """`(column names, start line of each record, records)` from one `csv.reader` pass.

    Blank records (no field filled in, at most as many fields as the header) are left out.
    Raises `AnnotationError` listing every undecodable line, or every header, field-count and
    quoting problem.
    """
    problems, lines, records = [], [], []
    line = 0
    # One str object per distinct value, as pandas' parser makes them: the checks hash and
    # compare every cell, which is 2-5x faster on shared objects (their hash is kept) than on
    # a fresh str per cell spread over memory.
    shared = {}
    try:
        # utf-8-sig: a byte order mark is not part of the first column name. newline="":
        # csv.reader sees the line ends, so `line_num` counts physical lines (CRLF and CR too).
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(itertools.chain(f, [_END]), skipinitialspace=True)
            header = next(reader)
            if _is_end(header):
                raise AnnotationError(csv_path, [(1, "", "", "empty file; expected a header line")])
            if not any(header):
                message = "blank header line; expected the column names on line 1"
                raise AnnotationError(csv_path, [(1, "", "", message)])
            if _quote_open(header):
                raise AnnotationError(csv_path, [_open_quote_problem(1, reader.line_num - 1)])
            names = [name.strip() or f"Unnamed: {i}" for i, name in enumerate(header)]
            _check_header(names, problems)
            fields = len(header)
            line = reader.line_num
            for record in reader:
                if len(record) == fields:
                    if any(record):
                        # A tuple of str leaves the cyclic garbage collector's lists at its
                        # first pass; 250k lists would have it walk them again and again.
                        records.append(tuple(map(shared.setdefault, record, record)))
                        lines.append(line + 1)
                # Blank records (no field filled in) are dropped, short or not.
                elif (len(record) > fields or any(record)) and not _is_end(record):
                    end = reader.line_num - _quote_open(record)
                    problems.append(_field_count_problem(fields, record, line + 1, end))
                line = reader.line_num
    except UnicodeDecodeError:
        raise AnnotationError(csv_path, _undecodable_lines(csv_path)) from None
    except csv.Error as e:
        # In practice a field over csv.field_size_limit(): a quote opened and never closed.
        problems.append((line + 1, "", "", f"CSV Error: {e} (a quote left open?)"))
    else:
        if records and _is_end(records[-1]):  # one column: the sentinel line reads as a record
            records.pop()
            lines.pop()
        if records and _quote_open(records[-1]):
            problems.append(_open_quote_problem(lines[-1], line - 1))
    if problems:
        raise AnnotationError(csv_path, problems)
    return names, lines, records


def _is_end(record):
    """Whether `record` is the sentinel line, read as a record of its own."""
    return len(record) == 1 and record[0] == _END[:-1]


def _quote_open(record):
    """Whether `record` ran into the sentinel line: a quote is open at the end of the file."""
    return record[-1].endswith(_END)


def _open_quote_problem(start, end):
    # pandas' words for it, with the line the record starts on.
    return (start, "", "", f"CSV Error: EOF inside string starting at line {start}{_quote_hint(start, end)}")


def _check_header(names, problems):
    """Reports column names given more than once (each column is read by its name)."""
    positions = {}
    for position, name in enumerate(names, 1):
        positions.setdefault(name, []).append(position)
    for name, where in positions.items():
        if len(where) > 1:
            places = ", ".join(map(str, where))
            message = f"duplicate column name (columns {places}); each column must appear once"
            problems.append((1, name, name, message))


def _field_count_problem(fields, record, start, end):
    # pandas' wording for a long record, which users of the earlier reader know.
    message = f"Expected {fields} fields in line {start}, saw {len(record)}"
    if end > start or _quote_open(record):
        message += _quote_hint(start, end)
    return (start, "", "", message)


def _quote_hint(start, end):
    if end > start:
        return f" (the record runs over lines {start}-{end}: a quote left open?)"
    return " (a quote left open?)"


def _undecodable_lines(csv_path):
    """One problem per line of the file that is not UTF-8, naming the offending bytes."""
    with open(csv_path, "rb") as f:
        data = f.read()
    problems = []
    # bytes.splitlines splits at \n, \r and \r\n only, as csv.reader counts lines.
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.end]
            # The text around the first bad byte, which shows as U+FFFD.
            at = len(raw[: e.start].decode("utf-8", errors="replace"))
            text = raw.decode("utf-8", errors="replace")
            begin = max(0, min(at - _SHOWN_CHARS // 2, len(text) - _SHOWN_CHARS))
            shown = text[begin : begin + _SHOWN_CHARS]
            shown = ("..." if begin else "") + shown + ("..." if begin + _SHOWN_CHARS < len(text) else "")
            problems.append(
                (
                    number,
                    "",
                    shown,
                    f"bytes {bad!r} at byte {e.start + 1} of the line are not UTF-8 "
                    "(UnicodeDecodeError); save the file as UTF-8",
                )
            )
    # Every bad byte sits inside one line, so this is a safety net, not a case seen.
    return problems or [(1, "", "", "not UTF-8 (UnicodeDecodeError); save the file as UTF-8")]


def _report(table, column, mask, message, problems):
    """Adds one problem per row of `table` where `mask` holds."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return
    lines = table.index.to_numpy()[mask]
    shown = table[column].to_numpy()[mask]
    messages = message if isinstance(message, (list, np.ndarray)) else [message] * len(lines)
    problems.extend(zip(lines.tolist(), [column] * len(lines), shown.tolist(), messages))


def _check_columns(table, schema, problems):
    required = ["path", "split"] + list(schema.names)
    header = ", ".join(table.columns)
    for column in required:
        if column not in table.columns:
            problems.append((1, column, "", f"missing required column (header has: {header})"))


def _check_choice(table, column, allowed, allow_empty, problems):
    """Class index (int32 `[n]`, -1 empty) of a one-of column; reports other values."""
    values = table[column]
    bad = ~values.isin(allowed) & ~(allow_empty & (values == ""))
    empty_note = ", or empty for unknown" if allow_empty else ""
    # 'Female' for 'female': say so, rather than only listing the classes.
    case_only = bad & values.str.lower().isin([a.lower() for a in allowed])
    message = f"expected one of {', '.join(allowed)}{empty_note}"
    other = np.asarray(bad & ~case_only, bool)
    if other.any():  # a typo: the nearest class too
        shown = values[other].to_numpy()
        near = {v: difflib.get_close_matches(v, list(allowed), n=1) for v in set(shown)}
        hints = [f"{message} (did you mean {near[v][0]!r}?)" if near[v] else message for v in shown]
        _report(table, column, other, hints, problems)
    _report(table, column, case_only, f"{message} (class names are case-sensitive: only the case differs)", problems)
    # Unknown values (reported above, and "") map to -1.
    return pd.Index(list(allowed)).get_indexer(values).astype(np.int32)


def _check_int(table, column, optional, problems):
    """int64 `[n]` of an integer column (-1 unknown); reports non-integers and < -1."""
    values = table[column]
    empty = (values == "") if optional else np.zeros(len(values), bool)
    is_int = values.str.fullmatch(_INT_PATTERN)
    numbers = pd.to_numeric(values.where(is_int, str(UNKNOWN))).to_numpy(np.int64, copy=True)
    bad = ~(is_int | empty) | (numbers < UNKNOWN)
    what = "an integer >= 0, or -1 or empty for none" if optional else "an integer >= 0, or -1 for unknown"
    _report(table, column, bad, f"expected {what}", problems)
    numbers[np.asarray(empty, bool) | np.asarray(bad, bool)] = UNKNOWN
    return numbers


def _check_multi(table, column, classes, problems):
    """Multi-hot float32 `[n, C]` (a row of -1 when empty) of a `;`-separated column."""
    values = table[column]
    n = len(values)
    hot = np.zeros([n, len(classes)], np.float32)
    filled = (values != "").to_numpy()
    hot[~filled] = UNKNOWN
    items = values[filled].str.split(";").explode().str.strip()
    rows = np.flatnonzero(filled).repeat(values[filled].str.count(";").to_numpy() + 1)
    codes = pd.Categorical(items, categories=list(classes)).codes
    allowed = f"expected ';'-separated names from {', '.join(classes)} (each at most once), or empty for unknown"
    empty_item = (items == "").to_numpy()
    unknown = (codes < 0) & ~empty_item
    duplicate = pd.DataFrame({"row": rows, "code": codes}).duplicated().to_numpy() & (codes >= 0)
    # 'Happy' for 'happy': say so, as for a one-of column.
    spelling = {c.lower(): c for c in classes}
    right = np.full(len(items), None, object)
    right[unknown] = [spelling.get(item.lower()) for item in items.to_numpy()[unknown]]
    for kind, mask in (("an empty item", empty_item), ("unknown class", unknown), ("duplicate class", duplicate)):
        if not mask.any():
            continue
        names = pd.Series(items.to_numpy()[mask]).groupby(rows[mask]).agg(lambda s: ", ".join(map(repr, s)))
        row_mask = np.zeros(n, bool)
        row_mask[names.index.to_numpy()] = True
        if kind == "an empty item":
            messages = [f"{kind}; {allowed}"] * len(names)
        else:
            messages = [f"{kind} {found}; {allowed}" for found in names.to_numpy()]
        if kind == "unknown class" and any(r is not None for r in right):
            cased = (
                pd.Series(right[mask])
                .groupby(rows[mask])
                .agg(lambda s: ", ".join(repr(r) for r in s if isinstance(r, str)))
            )
            messages = [
                m + (f" (class names are case-sensitive: only the case differs from {c})" if c else "")
                for m, c in zip(messages, cased.reindex(names.index).to_numpy())
            ]
        _report(table, column, row_mask, messages, problems)
    ok = codes >= 0
    hot[rows[ok], codes[ok]] = 1.0
    return hot


def _check_id_splits(table, column, ids, split_ok, problems):
    """Re-id split rules (paper §4.1): train and test ids disjoint, query ids in the gallery."""
    split = table["split"].to_numpy()
    valid = split_ok.to_numpy() & (table[column].str.fullmatch(_INT_PATTERN)).to_numpy()
    known = valid & (ids != UNKNOWN)
    query = valid & (split == "query")
    _report(table, column, query & (ids == UNKNOWN), "a query image needs a known id (>= 0)", problems)
    gallery_ids = np.unique(ids[known & (split == "gallery")])
    absent = query & known & ~np.isin(ids, gallery_ids)
    _report(table, column, absent, "query id absent from the gallery; query ids must be gallery ids", problems)
    train = known & (split == "train")
    first_train = pd.Series(table.index.to_numpy()[train]).groupby(ids[train]).min()
    in_test = known & np.isin(split, TEST_SPLITS) & np.isin(ids, first_train.index.to_numpy())
    if in_test.any():
        messages = [
            f"id also in split 'train' (line {first_train[i]}); train and query/gallery ids must be disjoint"
            for i in ids[in_test]
        ]
        _report(table, column, in_test, messages, problems)


def _check_paths(paths, root, problems):
    """Absolute paths (object `[n]`); reports bad, escaping, duplicate and missing files."""
    table = paths.to_frame()
    raw = paths.to_numpy()
    empty = raw == ""
    absolute = (paths.str.startswith("/") | paths.str.startswith("\\") | paths.str.match(r"^[A-Za-z]:")).to_numpy()
    _report(table, "path", empty, "expected an image path relative to the dataset root", problems)
    _report(table, "path", absolute & ~empty, f"expected a path relative to the dataset root {root}", problems)
    norm = raw.copy()
    # normpath only where it changes something: it is the slow part for 250k rows.
    messy = paths.str.contains(r"(?:^|/)\.\.?(?:/|$)|//|/$").to_numpy()
    norm[messy] = [posixpath.normpath(p) for p in raw[messy]]
    escapes = ~empty & ~absolute & ((norm == "..") | pd.Series(norm).str.startswith("../").to_numpy())
    _report(table, "path", escapes, f"escapes the dataset root {root}", problems)
    # The system takes no file name with a NUL in it (os functions raise ValueError).
    nul = paths.str.contains("\x00", regex=False).to_numpy() & ~absolute & ~escapes
    _report(table, "path", nul, "expected a path without NUL characters ('\\x00')", problems)
    usable = ~(empty | absolute | escapes | nul)

    duplicate = usable & pd.Series(norm).where(usable).duplicated().to_numpy()
    if duplicate.any():
        first = pd.Series(table.index.to_numpy()[usable]).groupby(norm[usable]).min()
        messages = [f"duplicate path (first at line {first[p]})" for p in norm[duplicate]]
        _report(table, "path", duplicate, messages, problems)

    _check_files(table, norm, usable, root, problems)
    return (root.rstrip("/") + "/") + norm


def _check_masks(table, root, problems):
    """Absolute mask paths (object `[n]`, `""` none); reports absolute, escaping and missing files."""
    raw = table["mask"].to_numpy()
    given = raw != ""
    norm = np.array([posixpath.normpath(m) if g else "" for m, g in zip(raw, given)], object)
    absolute = given & np.array([m.startswith(("/", "\\")) or m[1:2] == ":" for m in raw])
    escapes = given & ~absolute & np.array([m == ".." or m.startswith("../") for m in norm])
    _report(
        table, "mask", absolute | escapes, f"expected a mask image path relative to the dataset root {root}", problems
    )
    checked = given & ~absolute & ~escapes
    missing = checked & np.array([c and not os.path.isfile(os.path.join(root, m)) for m, c in zip(norm, checked)])
    _report(table, "mask", missing, f"missing mask file (under {root})", problems)
    out = np.full(len(raw), "", object)
    out[checked] = [os.path.join(root, m) for m in norm[checked]]
    return out


def _check_files(table, norm, usable, root, problems):
    """Reports missing files and files that resolve outside `root` (symlinks)."""
    if not usable.any():  # every path already reported (absolute, escaping, empty)
        return
    real_root = os.path.realpath(root)
    parts = pd.Series(norm[usable]).str.rpartition("/")
    dirs, names = parts[0].to_numpy(), parts[2].to_numpy()
    positions = np.flatnonzero(usable)
    missing = np.zeros(len(norm), bool)
    outside = np.zeros(len(norm), bool)
    unlisted = {}  # position: why its folder cannot be listed
    for directory, index in pd.Series(range(len(dirs))).groupby(dirs).indices.items():
        folder = os.path.join(root, directory)
        real = os.path.realpath(folder)
        if not _inside(real, real_root):
            outside[positions[index]] = True
            continue
        try:
            files, links = _list_folder(folder)
        except OSError as e:  # there, but not to be listed: a name too long, no permission
            unlisted.update((p, e.strerror) for p in positions[index])
            continue
        found = pd.Series(names[index]).isin(files).to_numpy()
        missing[positions[index[~found]]] = True
        for i in index[pd.Series(names[index]).isin(links).to_numpy()]:
            if not _inside(os.path.realpath(os.path.join(folder, names[i])), real_root):
                outside[positions[i]] = True
    _report(table, "path", missing & ~outside, f"missing image file (under {root})", problems)
    _report(table, "path", outside, f"resolves outside the dataset root {root} (symlink)", problems)
    if unlisted:
        where = np.zeros(len(norm), bool)
        where[list(unlisted)] = True
        messages = [f"cannot look for the image file: {unlisted[p]} (under {root})" for p in sorted(unlisted)]
        _report(table, "path", where, messages, problems)


def _list_folder(folder):
    """(files, symlinks) in `folder`; files follow symlinks; empty when absent.

    Raises `OSError` when the folder is there but cannot be listed.
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    files = [e.name for e in entries if _is_file(e)]
    links = [e.name for e in entries if e.is_symlink()]
    return files, links


def _is_file(entry):
    try:
        return entry.is_file()
    except OSError:  # a symlink loop, a file without permission to look at
        return False


def _inside(path, real_root):
    return path == real_root or path.startswith(real_root.rstrip(os.sep) + os.sep)
