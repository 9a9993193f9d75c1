"""`python data_prep/import_dataset.py ...`: the same as `portrait-keras import ...`.

The code is `portrait_keras/data/prep/import_dataset.py`.
"""

import sys

from portrait_keras.data.prep.import_dataset import main

if __name__ == "__main__":
    sys.exit(main())
