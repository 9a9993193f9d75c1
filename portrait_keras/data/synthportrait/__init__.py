"""SynthPortrait: the procedural Portrait250K-like dataset every command runs on (docs/synthportrait.md).

`generate(out_dir, identities, seed, images_per_identity)` writes images and `annotations.csv`;
`default_dataset()` generates the embedded default once into a cache folder.
"""

from portrait_keras.data.synthportrait.dataset import COLUMNS, VERSION, default_dataset, generate

__all__ = ["COLUMNS", "VERSION", "default_dataset", "generate"]
