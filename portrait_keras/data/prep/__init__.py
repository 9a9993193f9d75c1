"""Dataset preparation commands (`portrait-keras import|dedup|stats|validate`; the scripts in
`data_prep/` call the same functions).

    import_dataset.py  Market-1501 / DukeMTMC-reID folders → an annotation CSV
    phash.py           perceptual hashes of a table's images (cached)
    dedup.py           near-duplicate groups from the hashes (the `group` column)
    stats.py           label counts and LTS_k per split (paper Table 3)
    validate.py        every reader check and a decode of every image
"""
