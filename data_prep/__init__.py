"""Dataset preparation scripts (pHash, near-duplicate groups, statistics); run as `python data_prep/x.py`."""
