"""`python data_prep/dedup.py ...`: the same as `portrait-keras dedup ...` (`portrait_keras/data/prep/dedup.py`)."""

import sys

from portrait_keras.data.prep.dedup import main

if __name__ == "__main__":
    sys.exit(main())
