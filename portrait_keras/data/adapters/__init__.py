"""Adapters from public re-id datasets to our annotation table (`read_annotations` format).

Each adapter reads a dataset folder (and optionally its attribute file) and returns an
`Imported` whose `table` is written as the annotation CSV:

    from portrait_keras.data.adapters import ADAPTERS
    ADAPTERS["market1501"]("Market-1501-v15.09.15").to_csv("Market-1501-v15.09.15/annotations.csv")

or from the shell, `portrait-keras import market1501 ROOT OUT.csv`.
"""

from portrait_keras.data.adapters._common import AdapterError, Imported
from portrait_keras.data.adapters.dukemtmc import dukemtmc
from portrait_keras.data.adapters.market1501 import market1501

# Dataset name -> adapter `(root, attributes=None, ...) -> Imported`.
ADAPTERS = {"market1501": market1501, "dukemtmc": dukemtmc}

__all__ = ["ADAPTERS", "AdapterError", "Imported", "dukemtmc", "market1501"]
