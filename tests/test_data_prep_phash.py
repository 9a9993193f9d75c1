import os
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from portrait_keras.data.prep import phash
from portrait_keras.data.prep.phash import CACHE_NAME, phash_file, phash_images

ROOT = Path(__file__).resolve().parents[1]


def _write(path, seed, size=(32, 64)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _images(tmp_path, n):
    names = [f"img/{i:03d}.png" for i in range(n)]
    for i, name in enumerate(names):
        _write(tmp_path / name, i)
    return names


def test_phash_matches_imagehash(tmp_path):
    _write(tmp_path / "a.png", 0)
    with Image.open(tmp_path / "a.png") as image:
        expected = imagehash.phash(image)
    value = phash_file(tmp_path / "a.png")
    assert f"{value:016x}" == str(expected)
    assert phash_images(["a.png"], tmp_path).tolist() == [value]
    assert phash_images(["a.png"], tmp_path).dtype == np.uint64


def test_cache_only_rehashes_new_or_changed_files(tmp_path):
    names = _images(tmp_path, 5)
    hashes, hashed = phash._phash_images(names, tmp_path, None, 1)
    assert hashed == 5
    with np.load(tmp_path / CACHE_NAME, allow_pickle=False) as cache:  # plain arrays, no pickle
        assert sorted(cache["paths"].tolist()) == [os.path.normpath(n) for n in names]
        assert cache["hashes"].dtype == np.uint64

    assert phash._phash_images(names, tmp_path, None, 1)[1] == 0
    _write(tmp_path / names[2], 99)  # changed content, size or mtime
    os.utime(tmp_path / names[2], ns=(1, 1))
    _write(tmp_path / "img/new.png", 100)
    again, hashed = phash._phash_images(names + ["img/new.png"], tmp_path, None, 1)
    assert hashed == 2
    assert again[[0, 1, 3, 4]].tolist() == hashes[[0, 1, 3, 4]].tolist()
    assert again[2] == phash_file(tmp_path / names[2]) != hashes[2]

    # Entries of files that no longer exist are dropped; those of other files stay.
    os.remove(tmp_path / names[0])
    phash._phash_images(["img/new.png", "img/new.png"], tmp_path, None, 1)
    with np.load(tmp_path / CACHE_NAME, allow_pickle=False) as cache:
        assert len(cache["paths"]) == 5


def test_unreadable_cache_is_rebuilt(tmp_path, capsys):
    names = _images(tmp_path, 2)
    (tmp_path / CACHE_NAME).write_bytes(b"not a zip file")
    assert phash._phash_images(names, tmp_path, None, 1)[1] == 2
    assert "ignoring unreadable pHash cache" in capsys.readouterr().err
    assert phash._phash_images(names, tmp_path, None, 1)[1] == 0


def test_parallel_equals_serial(tmp_path):
    names = _images(tmp_path, phash._MIN_PARALLEL)
    parallel = phash_images(names, tmp_path, cache_path=tmp_path / "parallel.npz", workers=2)
    serial = phash_images(names, tmp_path, cache_path=tmp_path / "serial.npz", workers=1)
    np.testing.assert_array_equal(parallel, serial)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png: image not found"):
        phash_images(["missing.png"], tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"no image")
    with pytest.raises(OSError, match="broken.jpg: cannot hash the image"):
        phash_images(["broken.jpg"], tmp_path)
    with pytest.raises(ValueError, match="workers must be a positive int or None. Received: workers=0"):
        phash_images([], tmp_path, workers=0)


def test_cli_reports_cache_use(tmp_path, capsys):
    names = _images(tmp_path, 3)
    (tmp_path / "annotations.csv").write_text("path,split\n" + "".join(f"{n},train\n" for n in names))
    phash.main([str(tmp_path / "annotations.csv"), "--workers", "1"])
    assert "3 images: 3 hashed, 0 from the cache" in capsys.readouterr().out
    phash.main([str(tmp_path / "annotations.csv")])
    assert "3 images: 0 hashed, 3 from the cache" in capsys.readouterr().out
