"""Market-1501 (Zheng et al., ICCV 2015) and Market-1501-attribute as an annotation table.

Folders and splits: `bounding_box_train` -> `train`, `query` -> `query`,
`bounding_box_test` -> `gallery`. File names are `PPPP_cCsS_FFFFFF_NN.jpg`, e.g.
`0002_c1s1_000451_03.jpg`: identity `PPPP`, camera `C` (1-6), video sequence `S` of that
camera, frame `FFFFFF` of the sequence, detection box `NN` in the frame. Columns:

- `id`: `PPPP` as an integer. The gallery has two special identities. `-1` (junk: boxes
  with too little of a person) is dropped, as the standard protocol excludes junk from
  the gallery; `Imported.junk` lists them and the summary counts them. `0000`
  (distractors: false detections, background) stays in the gallery with the unknown
  id `-1`: it never matches a query, as in the protocol. A query image must have a
  real identity (an error otherwise).
- `camera`: `C`; `frame`: `FFFFFF`; `source`: `cCsS`, the video the frame comes from
  (frame numbers restart in each), so `data_prep/dedup.py` pairs frames of one video.

Attributes (optional; Lin et al., "Improving person re-identification by attribute and
identity learning", 2019): `market_attribute.mat` labels each identity (751 train, 750
test) with 27 attributes coded `1, 2, ...`. Two map onto our default schema:

| field    | codes                                  | ours                                    |
|----------|----------------------------------------|-----------------------------------------|
| `gender` | 1 male, 2 female                       | `male`, `female`                         |
| `age`    | 1 young (child), 2 teenager, 3 adult, 4 old | `child`, `teenager`, `adult_age`, `elderly` |

Market's "adult" spans our `young_adult` and `middle_aged`; the crops come from a
university campus, so by default it maps to `young_adult` (`adult_age` picks another
class, or `None` to leave adults unknown). The other attributes (bags, clothing,
colours, hair, hat) have no task in our schema; physique, height, body, arm and
expression are unknown (empty) for every image, as are the attributes of distractors.
"""

from portrait_keras.data.adapters import _common

NAME = "market1501"
ATTRIBUTE_STRUCT = "market_attribute"
GENDER = {1: "male", 2: "female"}
ADULT_AGES = ("young_adult", "middle_aged", None)
JUNK = -1
DISTRACTOR = 0
_PATTERN = r"(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg"
_EXPECTED = "PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c1s1_000451_03.jpg; PPPP is -1 for junk)"


def market1501(root, attributes=None, *, adult_age="young_adult"):
    """The annotation table of a Market-1501 folder.

    Args:
        root: path-like. Folder holding `bounding_box_train`, `query`, `bounding_box_test`;
            the table's paths are relative to it.
        attributes: path-like or None. `market_attribute.mat` of Market-1501-attribute;
            None leaves gender and age unknown.
        adult_age: str or None. Our age class for Market's "adult" (code 3):
            `"young_adult"`, `"middle_aged"` or None (unknown). Defaults to `"young_adult"`.

    Returns:
        `_common.Imported` (`.table`, `.junk`, `.ignored`, `.summary()`, `.to_csv(path)`).

    Raises:
        AdapterError: a missing folder, a file name off the pattern, a query image of
            junk or distractors, or a bad attribute file (each naming the file).

    Example:
    >>> imported = market1501("Market-1501-v15.09.15")  # doctest: +SKIP
    >>> imported.to_csv("Market-1501-v15.09.15/annotations.csv")  # doctest: +SKIP
    """
    if adult_age not in ADULT_AGES:
        raise ValueError(f"adult_age must be one of {ADULT_AGES}. Received: adult_age={adult_age!r}")
    images, junk, ignored = _common.scan(root, _parse)
    labels = None if attributes is None else _labels(attributes, adult_age)
    table = _common.build_table(images, labels, attributes)
    return _common.Imported(NAME, str(root), table, junk, ignored)


def _parse(folder, name, split):
    found = _common.match(_PATTERN, name, _EXPECTED)
    person, camera, sequence, frame = int(found[1]), int(found[2]), int(found[3]), int(found[4])
    if split == "query" and person in (JUNK, DISTRACTOR):
        raise _common.AdapterError(
            f"query image of identity {found[1]} (junk or distractor); a query needs a real identity"
        )
    if person == JUNK:
        return None
    return _common.Image(
        path=f"{folder}/{name}",
        split=split,
        id=-1 if person == DISTRACTOR else person,
        camera=camera,
        frame=frame,
        source=f"c{camera}s{sequence}",
    )


def _labels(path, adult_age):
    """gender and age per `(part, id)` from `market_attribute.mat`."""
    ages = {1: "child", 2: "teenager", 3: adult_age, 4: "elderly"}
    parts = _common.read_attribute_mat(path, ATTRIBUTE_STRUCT, ("gender", "age"))
    decoded = {}
    for part, raw in parts.items():
        where = f"{path}: {ATTRIBUTE_STRUCT}.{part}"
        decoded[part] = raw.assign(
            gender=_common.decode(raw["gender"], GENDER, f"{where}.gender"),
            age=_common.decode(raw["age"], ages, f"{where}.age"),
        )
    return _common.stack(decoded)
