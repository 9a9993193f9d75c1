"""What the re-id dataset adapters share: folder scan, identity attribute `.mat` files, the table.

Market-1501 and DukeMTMC-reID are laid out alike: three folders of person crops whose
file names carry the identity, the camera and the frame, and (separately released)
identity-level attribute annotations in a MATLAB struct (Lin et al., "Improving person
re-identification by attribute and identity learning", Pattern Recognition 2019).
"""

import dataclasses
import os
import re

import numpy as np
import pandas as pd

from portrait_keras import schema as schema_lib
from portrait_keras.data.annotations import UNKNOWN

# Dataset folder -> our split (paper §4.1); the same names in both datasets.
FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
# Files with these extensions are images and must follow the dataset's naming;
# anything else in the folders (Market-1501 ships `Thumbs.db`) is listed, not read.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class AdapterError(ValueError):
    """A dataset folder or attribute file that does not look as expected; names the file."""


@dataclasses.dataclass(frozen=True)
class Image:
    """One parsed file name.

    Args:
        path: str. Path relative to the dataset root, `/`-separated.
        split: str. `train`, `query` or `gallery`.
        id: int. Identity, `-1` unknown (a distractor).
        camera: int. Camera number as in the name.
        frame: int. Frame number as in the name.
        source: str. The video stream the crop comes from.
    """

    path: str
    split: str
    id: int
    camera: int
    frame: int
    source: str


@dataclasses.dataclass(frozen=True)
class Imported:
    """An adapter's result: the annotation table and what was left out of it.

    Attributes:
        dataset: str. Dataset name, for the summary.
        root: str. The dataset root the paths are relative to.
        table: `pandas.DataFrame`. One row per image, the columns of
            `portrait_keras.data.read_annotations` (`path`, `split`, the default schema's
            tasks, `source`, `frame`, `camera`); unknown labels are empty strings,
            unknown ids `-1`.
        junk: tuple of str. Images dropped by the dataset's protocol (relative paths).
        ignored: tuple of str. Non-image entries of the folders (relative paths).
    """

    dataset: str
    root: str
    table: pd.DataFrame
    junk: tuple = ()
    ignored: tuple = ()

    def to_csv(self, path):
        """Writes `table` to `path` (no index column)."""
        self.table.to_csv(path, index=False)

    def summary(self):
        """Human-readable counts: images and ids per split, labels per task, what was left out."""
        table = self.table
        lines = [f"{self.dataset} at {self.root}: {len(table)} images"]
        for split in FOLDERS.values():
            rows = table[table["split"] == split]
            known = rows["id"] != UNKNOWN
            lines.append(
                f"  {split:8s} {len(rows):6d} images, {rows['id'][known].nunique():5d} ids, "
                f"{int((~known).sum()):5d} with unknown id"
            )
        labelled = [f"{name} {int((table[name] != '').sum())}" for name in _task_names() if (table[name] != "").any()]
        lines.append("  labelled images: " + (", ".join(labelled) if labelled else "none (no attribute file)"))
        lines.append(f"  junk images dropped: {len(self.junk)}")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(f"  non-image entries not read: {len(self.ignored)} ({shown})")
        return "\n".join(lines)


def scan(root, parse):
    """Parses every image name in the three dataset folders.

    Args:
        root: path-like. Dataset root holding `bounding_box_train`, `query`, `bounding_box_test`.
        parse: callable `(folder, name, split) -> Image or None`; None drops the image as junk;
            raises `AdapterError` for a name that does not follow the dataset's pattern.

    Returns:
        `(images, junk, ignored)`: list of `Image` in split then name order, and the
        relative paths of the junk images and of the non-image entries.

    Raises:
        AdapterError: a folder is missing, or names do not parse (all of them listed).
    """
    root = os.fspath(root)
    missing = [f for f in FOLDERS if not os.path.isdir(os.path.join(root, f))]
    if missing:
        raise AdapterError(f"{root}: missing dataset folder(s) {', '.join(missing)}; expected {', '.join(FOLDERS)}")
    images, junk, ignored, bad = [], [], [], []
    for folder, split in FOLDERS.items():
        for entry in sorted(os.scandir(os.path.join(root, folder)), key=lambda e: e.name):
            relative = f"{folder}/{entry.name}"
            if not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                ignored.append(relative)
                continue
            try:
                image = parse(folder, entry.name, split)
            except AdapterError as e:
                bad.append(f"{os.path.join(root, relative)}: {e}")
                continue
            if image is None:
                junk.append(relative)
            else:
                images.append(image)
    if bad:
        listed = "\n".join(bad[:20]) + (f"\n... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise AdapterError(f"{len(bad)} image name(s) under {root} do not parse:\n{listed}")
    return images, tuple(junk), tuple(ignored)


def match(pattern, name, expected):
    """`pattern.fullmatch(name)`; `AdapterError` quoting `expected` when it does not match."""
    found = re.fullmatch(pattern, name)
    if found is None:
        raise AdapterError(f"file name {name!r} does not match {expected}")
    return found


def build_table(images, labels=None, labels_path=None):
    """The annotation table of `images` with attribute labels joined per identity.

    Args:
        images: list of `Image`.
        labels: `pandas.DataFrame` or None. Attribute labels (class names, `""` unknown)
            indexed by `(part, id)` where `part` is `"train"` for the train split and
            `"test"` for query and gallery; columns are task names of the default schema.
        labels_path: path-like. The attribute file, for the error message.

    Returns:
        `pandas.DataFrame` with the columns `path, split, <tasks>, source, frame, camera`.

    Raises:
        AdapterError: an image's known identity has no entry in `labels`.
    """
    identity = schema_lib.default_schema().identity_task.name
    table = pd.DataFrame(
        {
            "path": [i.path for i in images],
            "split": [i.split for i in images],
            identity: np.array([i.id for i in images], np.int64),
        }
    )
    for name in _task_names():
        table[name] = ""
    if labels is not None and len(images):
        part = np.where(table["split"] == "train", "train", "test")
        ids = table[identity].to_numpy()
        known = ids != UNKNOWN
        keys = pd.MultiIndex.from_arrays([part[known], ids[known]])
        absent = ~keys.isin(labels.index)
        if absent.any():
            pairs = sorted(set(zip(keys[absent].get_level_values(0), keys[absent].get_level_values(1))))
            shown = ", ".join(f"{p}.image_index lacks {i:04d}" for p, i in pairs[:10])
            raise AdapterError(
                f"{os.fspath(labels_path)}: {len(pairs)} identities of the images have no attribute "
                f"entry ({shown}{', ...' if len(pairs) > 10 else ''}); is this the attribute file of "
                f"this dataset?"
            )
        for name in labels.columns:
            column = table[name].to_numpy(object)
            column[known] = labels[name].reindex(keys).to_numpy(object)
            table[name] = column
    table["source"] = [i.source for i in images]
    table["frame"] = np.array([i.frame for i in images], np.int64)
    table["camera"] = np.array([i.camera for i in images], np.int64)
    return table


def read_attribute_mat(path, struct_name, fields):
    """Reads an identity-level attribute file (`market_attribute.mat`, `duke_attribute.mat`).

    The file holds one struct `struct_name` with fields `train` and `test` (their order
    differs between the datasets, so fields are read by name); each is a struct of
    `1 x N` arrays, one per attribute, and `image_index`, a `1 x N` cell of 4-digit id
    strings that says which identity each column describes.

    Args:
        path: path-like. The `.mat` file.
        struct_name: str. `"market_attribute"` or `"duke_attribute"`.
        fields: iterable of str. Attribute fields to read.

    Returns:
        dict `"train"`/`"test"` -> `pandas.DataFrame` of int64 raw values, one column per
        field, indexed by the int identity.

    Raises:
        AdapterError: naming the file and what is wrong (missing struct or field,
            lengths that disagree, ids that are not integers or repeat).
    """
    from scipy.io import loadmat  # only the attribute import needs scipy.io

    path = os.fspath(path)
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise AdapterError(f"{path}: cannot read as a MATLAB .mat file: {e}") from None
    if struct_name not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise AdapterError(f"{path}: expected a struct {struct_name!r}; variables found: {found}")
    top = mat[struct_name]
    parts = {}
    for part in ("train", "test"):
        struct = getattr(top, part, None)
        if struct is None or not hasattr(struct, "_fieldnames"):
            raise AdapterError(
                f"{path}: {struct_name}.{part} is missing or not a struct; expected a struct with fields train and test"
            )
        where = f"{path}: {struct_name}.{part}"
        missing = [f for f in (*fields, "image_index") if f not in struct._fieldnames]
        if missing:
            raise AdapterError(
                f"{where}: missing field(s) {', '.join(missing)}; fields found: {', '.join(struct._fieldnames)}"
            )
        ids = _parse_ids(np.atleast_1d(struct.image_index), where)
        columns = {}
        for field in fields:
            values = np.atleast_1d(np.asarray(getattr(struct, field)))
            if values.ndim != 1 or len(values) != len(ids) or not np.issubdtype(values.dtype, np.number):
                raise AdapterError(
                    f"{where}.{field}: expected {len(ids)} numbers (one per image_index "
                    f"entry); received shape {values.shape} of {values.dtype}"
                )
            if not np.all(values == np.round(values)):
                raise AdapterError(f"{where}.{field}: expected integer codes; received {values[:5]}")
            columns[field] = values.astype(np.int64)
        parts[part] = pd.DataFrame(columns, index=pd.Index(ids, name="id"))
    return parts


def _parse_ids(values, where):
    ids = []
    for value in values:
        text = str(np.asarray(value).squeeze()).strip()
        if not re.fullmatch(r"\d+", text):
            raise AdapterError(f"{where}.image_index: expected identity numbers like '0002'; received {text!r}")
        ids.append(int(text))
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise AdapterError(f"{where}.image_index: repeated identities {repeated[:10]}")
    return np.array(ids, np.int64)


def decode(raw, codes, where):
    """Class names (object array, `""` for `None` codes) of raw attribute values.

    Args:
        raw: `pandas.Series` of int codes indexed by identity.
        codes: dict int -> class name or None (None: no class of ours fits; unknown).
        where: str. File and field, for the error.

    Raises:
        AdapterError: a code outside `codes`, naming the identities that carry it.
    """
    bad = ~raw.isin(list(codes))
    if bad.any():
        shown = ", ".join(f"id {i}: {v}" for i, v in raw[bad].head(10).items())
        raise AdapterError(f"{where}: expected codes {sorted(codes)}; received {shown}")
    return raw.map(lambda v: codes[v] or "").astype(object)


def stack(parts):
    """One label table indexed by `(part, id)` from `{"train": table, "test": table}`."""
    return pd.concat(parts, names=["part", "id"])


def _task_names():
    """The default schema's task names other than the identity task."""
    return [t.name for t in schema_lib.default_schema().classification_tasks]
