"""Dataset adapters: tiny fabricated Market-1501 / DukeMTMC-reID folders and attribute files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from portrait_keras.data.adapters import ADAPTERS, AdapterError, dukemtmc, market1501
from portrait_keras.data.annotations import read_annotations
from portrait_keras.data.prep import import_dataset
from portrait_keras.schema import default_schema

ROOT = Path(__file__).resolve().parents[1]

MARKET_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s2_001234_02.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c2s3_000101_01.jpg"],
    "bounding_box_test": [
        "0001_c2s1_000301_01.jpg",
        "0001_c1s1_001101_02.jpg",
        "0003_c5s2_012345_04.jpg",
        "0004_c6s3_000010_01.jpg",
        "0000_c1s1_000151_01.jpg",  # distractor
        "-1_c1s1_000401_03.jpg",  # junk
    ],
}
# Market attribute codes per identity: (gender, age); gender 1 male 2 female,
# age 1 young 2 teenager 3 adult 4 old.
MARKET_TRAIN = {2: (2, 2), 7: (1, 4)}
MARKET_TEST = {1: (1, 3), 3: (2, 1), 4: (1, 3), 5: (2, 4)}  # 0005: no image, as in a subset

DUKE_FILES = {
    "bounding_box_train": ["0005_c2_f0046182.jpg", "0005_c7_f0151233.jpg"],
    "query": ["0011_c1_f0000123.jpg"],
    "bounding_box_test": ["0011_c4_f0102030.jpg", "0012_c8_f0000001.jpg"],
}
DUKE_TRAIN = {5: 2}  # gender; one identity: the squeezed .mat holds scalars, not arrays
DUKE_TEST = {11: 1, 12: 2}


def _folder(root, files):
    pixels = np.random.default_rng(0).integers(0, 256, [8, 4, 3], dtype=np.uint8)
    for folder, names in files.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(pixels).save(root / folder / name, quality=90)
    return root


def _part(codes, fields, extra=("backpack", "hat")):
    """One struct of the attribute file in its real layout: `1 x N` rows and a `1 x N` id cell."""
    ids = sorted(codes)
    struct = {name: np.ones([1, len(ids)]) for name in extra}  # attributes we do not map
    for i, field in enumerate(fields):
        struct[field] = np.array([[codes[p][i] if isinstance(codes[p], tuple) else codes[p] for p in ids]], float)
    struct["image_index"] = np.array([f"{p:04d}" for p in ids], dtype=object).reshape(1, -1)
    return struct


@pytest.fixture
def market(tmp_path):
    root = _folder(tmp_path / "Market-1501", MARKET_FILES)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")
    return root


def _market_mat(path, train=MARKET_TRAIN, test=MARKET_TEST, fields=("gender", "age")):
    # Test before train, as in the released market_attribute.mat.
    savemat(path, {"market_attribute": {"test": _part(test, fields), "train": _part(train, fields)}})
    return path


def _decoded(annotations, split, task):
    """Class names (None for unknown) of a single-label task."""
    classes = annotations.schema.task(task).classes
    return [None if c == -1 else classes[c] for c in annotations.labels(split)[task]]


def test_market_folders_map_to_splits_ids_cameras_and_frames(market):
    imported = market1501(market)
    csv = market / "annotations.csv"
    imported.to_csv(csv)
    ann = read_annotations(csv, required_splits=("train", "query", "gallery"))

    assert [p.rsplit("/", 1)[1] for p in ann.paths("train")] == sorted(MARKET_FILES["bounding_box_train"])
    assert ann.labels("train")["id"].tolist() == [2, 2, 7]
    assert ann.train_ids.tolist() == [2, 7]
    assert ann.labels("query")["id"].tolist() == [1, 3]
    gallery = dict(zip([p.rsplit("/", 1)[1] for p in ann.paths("gallery")], ann.labels("gallery")["id"]))
    # Junk dropped; distractors kept with the unknown id.
    assert gallery == {
        "0000_c1s1_000151_01.jpg": -1,
        "0001_c1s1_001101_02.jpg": 1,
        "0001_c2s1_000301_01.jpg": 1,
        "0003_c5s2_012345_04.jpg": 3,
        "0004_c6s3_000010_01.jpg": 4,
    }
    assert imported.junk == ("bounding_box_test/-1_c1s1_000401_03.jpg",)
    assert imported.ignored == ("bounding_box_test/Thumbs.db",)
    assert ann.cameras("train").tolist() == [1, 2, 3]
    assert ann.frames("train").tolist() == [451, 551, 1234]
    assert ann.table["source"].tolist()[:3] == ["c1s1", "c2s1", "c3s2"]
    for task in default_schema().classification_tasks:  # no attribute file: all unknown
        assert (ann.labels("gallery")[task.name] == -1).all()
    summary = imported.summary()
    assert "junk images dropped: 1" in summary and "Thumbs.db" in summary


def test_market_attributes_label_every_image_of_the_identity(market, tmp_path):
    mat = _market_mat(tmp_path / "market_attribute.mat")
    imported = market1501(market, mat)
    imported.to_csv(tmp_path / "out.csv")  # outside the root: the reader needs root=
    ann = read_annotations(tmp_path / "out.csv", root=market)

    gender = {1: "male", 2: "female"}
    age = {1: "child", 2: "teenager", 3: "young_adult", 4: "elderly"}
    for split, codes in (("train", MARKET_TRAIN), ("query", MARKET_TEST), ("gallery", MARKET_TEST)):
        ids = ann.labels(split)["id"]
        assert _decoded(ann, split, "gender") == [gender[codes[i][0]] if i != -1 else None for i in ids]
        assert _decoded(ann, split, "age") == [age[codes[i][1]] if i != -1 else None for i in ids]
        for task in ("physique", "height", "body", "arm"):
            assert (ann.labels(split)[task] == -1).all()
        assert (ann.labels(split)["expression"] == -1).all()
    assert "gender 9, age 9" in imported.summary()  # 10 images, one distractor


@pytest.mark.parametrize("adult_age", ["middle_aged", None])
def test_market_adult_age_is_a_choice(market, tmp_path, adult_age):
    table = market1501(market, _market_mat(tmp_path / "a.mat"), adult_age=adult_age).table
    adults = table[table["id"].isin([1, 4])]  # age code 3
    assert set(adults["age"]) == {adult_age or ""}
    assert set(table.loc[table["id"] == 3, "age"]) == {"child"}


def test_market_bad_names_and_query_junk_are_errors(market):
    (market / "query" / "0001_c1_f0046182.jpg").write_bytes(b"")  # a Duke name
    (market / "bounding_box_train" / "2_c1s1_000451_03.jpg").write_bytes(b"")
    with pytest.raises(AdapterError) as error:
        market1501(market)
    message = str(error.value)
    assert "2 image name(s)" in message
    assert "0001_c1_f0046182.jpg" in message and "2_c1s1_000451_03.jpg" in message
    assert "PPPP_cCsS_FFFFFF_NN.jpg" in message

    for bad in market.glob("*/*_f0046182.jpg"), market.glob("*/2_c1s1_*"):
        for path in bad:
            path.unlink()
    (market / "query" / "0000_c1s1_000151_01.jpg").write_bytes(b"")
    with pytest.raises(AdapterError, match=r"query/0000_c1s1_000151_01\.jpg.*real identity"):
        market1501(market)


def test_missing_folder_is_an_error(market):
    (market / "query").rename(market / "queries")
    with pytest.raises(AdapterError, match="missing dataset folder.*query"):
        market1501(market)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"struct": "duke_attribute"}, "expected a struct 'market_attribute'; variables found: duke_attribute"),
        ({"fields": ("gender",)}, r"market_attribute\.(test|train): missing field\(s\) age"),
        (
            {"test": {**MARKET_TEST, 3: (2, 5)}},
            r"market_attribute\.test\.age: expected codes \[1, 2, 3, 4\]; "
            r"received id 3: 5",
        ),
        ({"test": {1: (1, 3), 3: (2, 1)}}, r"test\.image_index lacks 0004"),
    ],
)
def test_market_bad_attribute_files_are_errors(market, tmp_path, change, match):
    path = tmp_path / "bad.mat"
    if "struct" in change:
        savemat(path, {change["struct"]: {"train": _part(MARKET_TRAIN, ("gender", "age"))}})
    else:
        _market_mat(path, test=change.get("test", MARKET_TEST), fields=change.get("fields", ("gender", "age")))
    with pytest.raises(AdapterError, match=match) as error:
        market1501(market, path)
    assert str(path) in str(error.value)


def test_dukemtmc_folders_and_gender(tmp_path):
    root = _folder(tmp_path / "DukeMTMC-reID", DUKE_FILES)
    mat = tmp_path / "duke_attribute.mat"
    # Train before test, as in the released duke_attribute.mat; no age field.
    savemat(
        mat,
        {
            "duke_attribute": {
                "train": _part(DUKE_TRAIN, ("gender",), ("boots", "top")),
                "test": _part(DUKE_TEST, ("gender",), ("boots", "top")),
            }
        },
    )
    dukemtmc(root, mat).to_csv(root / "annotations.csv")
    ann = read_annotations(root / "annotations.csv")

    assert ann.labels("train")["id"].tolist() == [5, 5]
    assert ann.labels("gallery")["id"].tolist() == [11, 12]
    assert ann.cameras("train").tolist() == [2, 7]
    assert ann.frames("train").tolist() == [46182, 151233]
    assert ann.table["source"].tolist() == ["c2", "c7", "c1", "c4", "c8"]
    assert _decoded(ann, "train", "gender") == ["female", "female"]
    assert _decoded(ann, "query", "gender") == ["male"]
    assert _decoded(ann, "gallery", "gender") == ["male", "female"]
    for split in ann.splits:
        assert (ann.labels(split)["age"] == -1).all()

    (root / "query" / "0002_c1s1_000451_03.jpg").write_bytes(b"")  # a Market name
    with pytest.raises(AdapterError, match=r"query/0002_c1s1_000451_03\.jpg.*PPPP_cC_fFFFFFFF\.jpg"):
        dukemtmc(root)


def test_cli_writes_a_table_that_reads_back(market, tmp_path, capsys):
    out = tmp_path / "market.csv"
    import_dataset.main(
        [
            "market1501",
            str(market),
            str(out),
            "--attributes",
            str(_market_mat(tmp_path / "m.mat")),
            "--adult-age",
            "unknown",
        ]
    )
    printed = capsys.readouterr().out
    assert "junk images dropped: 1" in printed and f"--root {market}" in printed
    ann = read_annotations(out, root=market)
    assert ann.num_images("gallery") == 5
    assert set(ann.table.loc[ann.table["id"] == "1", "age"]) == {""}  # adults left unknown
    assert sorted(ADAPTERS) == ["dukemtmc", "market1501"]

    with pytest.raises(SystemExit, match="missing dataset folder"):
        import_dataset.main(["dukemtmc", str(tmp_path / "nowhere"), str(tmp_path / "x.csv")])
