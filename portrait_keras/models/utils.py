"""Small helpers shared by the backbone builders."""

import os

# PyTorch's BatchNorm momentum 0.1 and epsilon 1e-5 (the paper's code, timm, torchvision, fast-reid),
# in Keras' terms: moving statistics settle quickly, and converted weights match.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def load_backbone_weights(model, weights):
    """Load saved weights (`.weights.h5`) into `model`; `ValueError` if the file is missing.

    Args:
        model: keras.Model. The freshly built backbone.
        weights: str. Path written by `model.save_weights` of the same architecture.
    """
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise ValueError(
            "Backbone weights must be the path of an existing `.weights.h5` file (no download "
            f"is attempted). Received: weights={weights!r}"
        )
    model.load_weights(weights)
    return model
