"""`python data_prep/validate.py ...`: the same as `portrait-keras validate ...`.

The code is `portrait_keras/data/prep/validate.py`.
"""

import sys

from portrait_keras.data.prep.validate import main

if __name__ == "__main__":
    sys.exit(main())
