"""Shared fixtures: a tiny SynthPortrait dataset, generated once per test session."""

import pytest

TINY_IDENTITIES = 16
TINY_IMAGES_PER_IDENTITY = 8


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """Path of the `annotations.csv` of a tiny SynthPortrait (about 320 images, seed 0).

    It has all three splits, unknown ids, missing labels, two-expression images and
    near-duplicate groups; about 9 train identities.
    """
    from portrait_keras.data.synthportrait import generate

    return generate(
        tmp_path_factory.mktemp("tiny_synth"),
        identities=TINY_IDENTITIES,
        seed=0,
        images_per_identity=TINY_IMAGES_PER_IDENTITY,
        workers=1,
    )


@pytest.fixture(scope="session")
def tiny_annotations(tiny_synth):
    """`read_annotations(tiny_synth)`."""
    from portrait_keras.data.annotations import read_annotations

    return read_annotations(tiny_synth)


@pytest.fixture(scope="session")
def smoke_run_dir(tiny_synth, tmp_path_factory):
    """Run folder of `python experiments/run.py smoke --data <tiny_synth> --epochs 2`.

    The `smoke` experiment as the command runs it (tiny backbone, 128x64 images, FSS, Batch
    Rank, uncertainty weighting), trained once per session for the commands that read a run
    (interpret, search, report). Tests must not change it; they may add `report/`.
    """
    from portrait_keras.commands import train as run
    from portrait_keras.training.fit import train

    config = run.build_config(run.parse_args(["smoke", "--data", str(tiny_synth), "--epochs", "2"]))
    run_dir = tmp_path_factory.mktemp("smoke_run") / "run"
    train(config, run_dir=run_dir, verbose=0)
    return run_dir
