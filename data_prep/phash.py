"""`python data_prep/phash.py ...`: the same as `portrait-keras phash ...` (`portrait_keras/data/prep/phash.py`)."""

import sys

from portrait_keras.data.prep.phash import main

if __name__ == "__main__":
    sys.exit(main())
