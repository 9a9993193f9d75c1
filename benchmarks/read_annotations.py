"""Speed of `read_annotations` at Portrait250K size (250,000 rows).

Writes a table of 250k rows with empty image files, then prints the time of
`read_annotations` (every check, file existence included) and, measured in the same run on
the same file, of a bare `pandas.read_csv`, with the ratio.

    python benchmarks/read_annotations.py [--rows 250000]
"""

import argparse
import os
import tempfile
import time

import pandas as pd

from portrait_keras.data import read_annotations

HEADER = "path,split,id,gender,age,physique,height,body,arm,expression,source,frame,camera,group"


def write_table(folder, rows):
    for d in range(100):
        os.makedirs(os.path.join(folder, f"{d:03d}"), exist_ok=True)
    lines = [HEADER]
    train_end, query_end = int(rows * 0.6), int(rows * 0.65)
    for i in range(rows):
        path = f"{i % 100:03d}/{i}.jpg"
        open(os.path.join(folder, path), "w").close()
        split, ident = (
            ("train", i % 640) if i < train_end else ("query" if i < query_end else "gallery", 1000 + i % 400)
        )
        lines.append(f"{path},{split},{ident},male,elderly,thin,tall,standing,arms_down,happy;sad,m,{i},-1,{i // 3}")
    csv_path = os.path.join(folder, "annotations.csv")
    with open(csv_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=250_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv_path = write_table(folder, args.rows)
        start = time.perf_counter()
        pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        ann = read_annotations(csv_path)
        full = time.perf_counter() - start
    print(
        f"rows: {args.rows}  (train {ann.num_images('train')}, query {ann.num_images('query')}, "
        f"gallery {ann.num_images('gallery')})"
    )
    print(f"pandas.read_csv alone:   {plain:.2f} s")
    print(f"read_annotations (all checks): {full:.2f} s  ratio to read_csv: {full / plain:.1f}x")


if __name__ == "__main__":
    main()
