"""Matching a PyTorch state_dict to the variables a converter fills (`convert_hrnet`, `convert_clip`)."""

import numpy as np

DATA_PARALLEL_PREFIX = "module."  # checkpoints saved from PyTorch's DataParallel


def match_state_dict(state_dict, expected, *, official_shape, ignored, mismatch):
    """`state_dict` by official key, checked against `expected` all at once.

    Args:
        state_dict: mapping str → array. The checkpoint's key → value; a `module.` prefix is
            removed.
        expected: dict. Official key → the argument tuple of `official_shape` (the Keras
            variable first).
        official_shape: callable. `official_shape(*expected[key])` → the PyTorch tensor's shape.
        ignored: callable. `ignored(key)` → True for a key (prefix removed) the model has no
            variable for and does not need (an ImageNet classifier, a BN counter).
        mismatch: str. The start of the error message: what the state_dict should have been.

    Returns: dict, official key → value, for every key of `expected`.

    Raises:
        ValueError: `mismatch`, then every missing key, unexpected key (also one given both
            with and without the prefix) and wrong shape, with the shapes.
    """
    matched, unexpected, wrong_shape = {}, [], []
    for key, value in state_dict.items():
        name = key[len(DATA_PARALLEL_PREFIX) :] if key.startswith(DATA_PARALLEL_PREFIX) else key
        if ignored(name):
            continue
        shape = tuple(np.shape(value))
        if name not in expected or name in matched:
            unexpected.append(f"{key} {list(shape)}")
            continue
        matched[name] = value
        want = official_shape(*expected[name])
        if shape != want:
            wrong_shape.append(f"{key} {list(shape)} (expected {list(want)})")
    missing = [f"{k} {list(official_shape(*v))}" for k, v in expected.items() if k not in matched]
    problems = [
        f"{label} ({len(items)}): " + ", ".join(items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if items
    ]
    if problems:
        raise ValueError(f"{mismatch} Received: " + "; ".join(problems))
    return matched
