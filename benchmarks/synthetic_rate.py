"""SynthPortrait generation speed: images/s with W worker processes vs one process.

Generates the same dataset (same seed, so the same bytes) twice into temporary folders,
once in this process and once with `--workers` processes, and prints both rates, the
CPU time per image of the single process, and the speed-up. Goal: >= 500 images/s on
2 cores.

Usage:
    python benchmarks/synthetic_rate.py [--identities 120] [--workers 2]
"""

import argparse
import os
import tempfile
import time

from portrait_keras.data.synthportrait import dataset as synthetic


def rate(identities, images_per_identity, workers):
    with tempfile.TemporaryDirectory() as folder:
        start, cpu = time.perf_counter(), time.process_time()
        csv_path = synthetic.generate(folder, identities, 0, images_per_identity, workers=workers)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        with open(csv_path) as f:
            count = sum(1 for _ in f) - 1
    return count, count / seconds, 1000 * cpu / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=synthetic.DEFAULT_IDENTITIES)
    parser.add_argument("--images-per-identity", type=int, default=synthetic.DEFAULT_IMAGES_PER_IDENTITY)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    count, single, single_cpu = rate(args.identities, args.images_per_identity, 1)
    _, parallel, _ = rate(args.identities, args.images_per_identity, args.workers)
    print(f"{count} images, {os.cpu_count()} CPUs")
    print(f"1 process:   {single:6,.0f} images/s  ({single_cpu:.2f} CPU-ms/image)")
    print(f"{args.workers} workers:   {parallel:6,.0f} images/s")
    print(f"speed-up: {parallel / single:.2f}x")


if __name__ == "__main__":
    main()
