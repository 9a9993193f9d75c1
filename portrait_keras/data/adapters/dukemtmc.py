"""DukeMTMC-reID (Zheng et al., ICCV 2017) and DukeMTMC-attribute as an annotation table.

Folders and splits: `bounding_box_train` -> `train`, `query` -> `query`,
`bounding_box_test` -> `gallery`. File names are `PPPP_cC_fFFFFFFF.jpg`, e.g.
`0001_c2_f0046182.jpg`: identity `PPPP`, camera `C` (1-8), frame `FFFFFFF` of that
camera's video. Columns: `id` = `PPPP` (no junk or distractor ids: the 408 identities
seen by one camera only are ordinary gallery identities), `camera` = `C`,
`frame` = `FFFFFFF`, `source` = `cC` (one video per camera, so `data_prep/dedup.py`
pairs frames of one camera).

Attributes (optional; Lin et al., "Improving person re-identification by attribute and
identity learning", 2019): `duke_attribute.mat` labels each identity (702 train, 1,110
test) with 23 attributes coded `1, 2`. Only `gender` (1 male, 2 female) has a task in
our default schema; Duke has no age, so age, physique, height, body, arm and expression
are unknown (empty) for every image. The rest (bags, boots, hat, shoes, top length,
colours) has no task of ours.
"""

from portrait_keras.data.adapters import _common

NAME = "dukemtmc"
ATTRIBUTE_STRUCT = "duke_attribute"
GENDER = {1: "male", 2: "female"}
_PATTERN = r"(\d{4})_c(\d)_f(\d{7})\.jpg"
_EXPECTED = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"


def dukemtmc(root, attributes=None):
    """The annotation table of a DukeMTMC-reID folder.

    Args:
        root: path-like. Folder holding `bounding_box_train`, `query`, `bounding_box_test`;
            the table's paths are relative to it.
        attributes: path-like or None. `duke_attribute.mat` of DukeMTMC-attribute; None
            leaves gender unknown.

    Returns:
        `_common.Imported` (`.table`, `.junk` (always empty), `.ignored`, `.summary()`,
        `.to_csv(path)`).

    Raises:
        AdapterError: a missing folder, a file name off the pattern or a bad attribute
            file (each naming the file).

    Example:
    >>> imported = dukemtmc("DukeMTMC-reID", "DukeMTMC-reID/duke_attribute.mat")  # doctest: +SKIP
    >>> imported.to_csv("DukeMTMC-reID/annotations.csv")  # doctest: +SKIP
    """
    images, junk, ignored = _common.scan(root, _parse)
    labels = None if attributes is None else _labels(attributes)
    table = _common.build_table(images, labels, attributes)
    return _common.Imported(NAME, str(root), table, junk, ignored)


def _parse(folder, name, split):
    found = _common.match(_PATTERN, name, _EXPECTED)
    camera = int(found[2])
    return _common.Image(
        path=f"{folder}/{name}",
        split=split,
        id=int(found[1]),
        camera=camera,
        frame=int(found[3]),
        source=f"c{camera}",
    )


def _labels(path):
    """gender per `(part, id)` from `duke_attribute.mat`."""
    parts = _common.read_attribute_mat(path, ATTRIBUTE_STRUCT, ("gender",))
    decoded = {
        part: raw.assign(gender=_common.decode(raw["gender"], GENDER, f"{path}: {ATTRIBUTE_STRUCT}.{part}.gender"))
        for part, raw in parts.items()
    }
    return _common.stack(decoded)
