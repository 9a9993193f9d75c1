import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from portrait_keras.data.prep import dedup
from portrait_keras.data.prep.dedup import near_duplicate_groups, near_duplicate_pairs

ROOT = Path(__file__).resolve().parents[1]


def _hashes_with_near_duplicates(n, seed):
    """Random uint64 hashes; a fifth are copies of others with 1-8 bits flipped, some exact."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    copies = rng.choice(n, n // 5, replace=False)
    sources = rng.choice(n, n // 5)
    flips = np.zeros(n // 5, np.uint64)
    for _ in range(8):
        use = rng.random(n // 5) < 0.5
        flips[use] ^= np.uint64(1) << rng.integers(0, 64, use.sum()).astype(np.uint64)
    hashes[copies] = hashes[sources] ^ flips
    return hashes


def _brute_force_pairs(hashes, threshold):
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    return np.nonzero(np.triu(distance <= threshold, 1))


def _components(n, first, second):
    """Reference groups: union-find in Python, numbered by first image, -1 alone."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in zip(first, second):
        parent[root(a)] = root(b)
    roots = [root(i) for i in range(n)]
    size = {r: roots.count(r) for r in set(roots)}
    number, out = {}, []
    for r in roots:
        if size[r] == 1:
            out.append(-1)
        else:
            out.append(number.setdefault(r, len(number)))
    return np.array(out)


@pytest.mark.parametrize("threshold", [0, 2, 4, 6, 8, 10, 12, 16])
def test_pairs_are_exact(threshold):
    hashes = _hashes_with_near_duplicates(2000, seed=threshold)
    first, second = near_duplicate_pairs(hashes, threshold)
    expected = _brute_force_pairs(hashes, threshold)
    np.testing.assert_array_equal(first, expected[0])
    np.testing.assert_array_equal(second, expected[1])


@pytest.mark.parametrize("blocks", [3, 4, 5, 7, 11])
def test_multi_index_hashing_is_exact_for_every_block_count(blocks):
    hashes = _hashes_with_near_duplicates(1500, seed=blocks)
    for threshold in (0, 3, 8, 12):
        first, second = dedup._pairs_multi_index(hashes, threshold, blocks)
        keys = np.unique(first * len(hashes) + second)
        expected = _brute_force_pairs(hashes, threshold)
        np.testing.assert_array_equal(keys, expected[0] * len(hashes) + expected[1])


@pytest.mark.parametrize("threshold", [4, 8])
def test_groups_are_the_connected_components(threshold):
    hashes = _hashes_with_near_duplicates(2000, seed=10 + threshold)
    groups = near_duplicate_groups(hashes, threshold)
    np.testing.assert_array_equal(groups, _components(len(hashes), *_brute_force_pairs(hashes, threshold)))


def test_planted_duplicates_and_nothing_else():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, 1000, dtype=np.uint64, endpoint=False)
    hashes[10] = hashes[500] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[700] = hashes[10] ^ np.uint64(1 << 60)  # 4 from 500, chained through 10
    hashes[20] = hashes[30]
    groups = near_duplicate_groups(hashes, threshold=3)
    assert groups[10] == groups[500] == groups[700] == 0
    assert groups[20] == groups[30] == 1
    assert np.count_nonzero(groups >= 0) == 5


def test_many_identical_hashes_are_one_group():
    # 20,000 identical frames: 2e8 pairs if listed; one node when collapsed.
    hashes = np.concatenate([np.full(20000, 12345, np.uint64), [2**40, 12345 ^ 1]]).astype(np.uint64)
    groups = near_duplicate_groups(hashes, 2)
    assert (groups[:20000] == 0).all() and groups[20001] == 0 and groups[20000] == -1


def test_sources_restrict_groups():
    hashes = np.array([5, 5, 5, 2**40], np.uint64)
    assert near_duplicate_groups(hashes, 0).tolist() == [0, 0, 0, -1]
    assert near_duplicate_groups(hashes, 0, sources=["a", "b", "a", "a"]).tolist() == [0, -1, 0, -1]


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    values = np.array([0, 1, 2**64 - 1, 0xF0F0], np.uint64)
    expected = dedup._popcount(values)
    monkeypatch.delattr(np, "bitwise_count")  # numpy < 2.0
    np.testing.assert_array_equal(dedup._popcount(values), expected)
    assert expected.tolist() == [0, 1, 64, 8]


def test_empty_and_invalid_input():
    assert near_duplicate_groups(np.zeros(0, np.uint64)).shape == (0,)
    with pytest.raises(ValueError, match="threshold must be an int in \\[0, 64\\]. Received: threshold=65"):
        near_duplicate_groups(np.zeros(3, np.uint64), 65)
    with pytest.raises(ValueError, match="uint64"):
        near_duplicate_groups(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="sources must have shape"):
        near_duplicate_groups(np.zeros(3, np.uint64), sources=["a"])


def _pattern(seed, size=(128, 256)):
    """A smooth random colour image: JPEG and small changes keep its pHash."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8))
    return small.resize(size, Image.BICUBIC)


def _dataset(tmp_path):
    """Images: 0-2 near-duplicates (re-encoded, brightened), 3 unrelated, 4 a copy of 3
    from another source; a CSV with awkward values in the other columns."""
    (tmp_path / "img").mkdir()
    _pattern(1).save(tmp_path / "img/a.jpg", quality=95)
    _pattern(1).save(tmp_path / "img/b.jpg", quality=60)
    Image.fromarray(np.clip(np.asarray(_pattern(1), np.int16) + 4, 0, 255).astype(np.uint8)).save(
        tmp_path / "img/c.jpg", quality=90
    )
    _pattern(2).save(tmp_path / "img/d.jpg", quality=90)
    _pattern(2).save(tmp_path / "img/e.jpg", quality=90)
    csv = tmp_path / "annotations.csv"
    csv.write_text(
        "path,split,id,expression,note,source,group\n"
        'img/a.jpg,train,3,happy;sad,"comma, inside",film1,7\n'
        "img/d.jpg,query,-1,,,film1,\n"
        "img/b.jpg,gallery,3,neutral,é,film1,7\n"
        "img/c.jpg,train,,happy,007,film1,\n"
        "img/e.jpg,gallery,4,,x,film2,\n",
        encoding="utf-8",
    )
    return csv


def test_cli_writes_the_group_column_and_keeps_everything_else(tmp_path):
    csv = _dataset(tmp_path)
    before = pd.read_csv(csv, dtype=str, keep_default_na=False)
    result = subprocess.run(
        [sys.executable, str(ROOT / "data_prep/dedup.py"), str(csv), "--workers", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 images, the largest 3" in result.stdout.replace("1 groups holding ", "")
    after = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(after.columns) == list(before.columns)
    pd.testing.assert_frame_equal(after.drop(columns="group"), before.drop(columns="group"))
    # a, b, c are near-duplicates; d and e are identical but from different sources.
    assert after["group"].tolist() == ["0", "-1", "0", "0", "-1"]

    dedup.main([str(csv), "--across-sources", "--workers", "1"])
    assert pd.read_csv(csv, dtype=str)["group"].tolist() == ["0", "1", "0", "0", "1"]


def test_cli_adds_a_missing_group_column(tmp_path):
    csv = _dataset(tmp_path)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False).drop(columns=["group", "source"])
    table.to_csv(csv, index=False)
    dedup.main([str(csv), "--workers", "1"])
    after = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(after.columns) == list(table.columns) + ["group"]
    assert after["group"].tolist() == ["0", "1", "0", "0", "1"]
    assert not list(tmp_path.glob(".annotations.*"))  # no temporary file left


def test_cli_keeps_a_backup_crlf_and_the_byte_order_mark(tmp_path):
    csv = _dataset(tmp_path)
    original = b"\xef\xbb\xbf" + csv.read_bytes().replace(b"\n", b"\r\n")
    csv.write_bytes(original)
    dedup.main([str(csv), "--workers", "1"])
    assert (tmp_path / "annotations.csv.bak").read_bytes() == original
    written = csv.read_bytes()
    assert written.startswith(b"\xef\xbb\xbf") and written.count(b"\r\n") == original.count(b"\r\n")
    assert b"\n" not in written.replace(b"\r\n", b"")
    assert pd.read_csv(csv, dtype=str)["group"].tolist() == ["0", "-1", "0", "0", "-1"]


def test_cli_out_leaves_the_original_untouched(tmp_path):
    csv = _dataset(tmp_path)
    original = csv.read_bytes()
    dedup.main([str(csv), "--workers", "1", "--out", str(tmp_path / "grouped.csv")])
    assert csv.read_bytes() == original and not (tmp_path / "annotations.csv.bak").exists()
    assert pd.read_csv(tmp_path / "grouped.csv", dtype=str)["group"].tolist() == ["0", "-1", "0", "0", "-1"]
