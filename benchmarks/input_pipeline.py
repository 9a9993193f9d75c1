"""Input pipeline speed: training `make_dataset` (all augmentation on) vs a plain PIL loop.

Generates (or reuses) a SynthPortrait set, then reads the same train files twice:

1. `make_dataset(..., training=True)`: decode, resize, flip, pad-and-crop, random
   erasing, batches of 128, a few hundred batches after a warm-up;
2. a single-process PIL loop: open, convert to RGB, resize to 128x256, to numpy;
3. for reference, `make_dataset(..., training=False)` (decode and resize only, like 2).

Prints the rates in images/s and the ratio of 1 to 2. Goal for 1: >= 1,000 images/s on
2 cores. `--backgrounds mean,blur` generates the set with person masks and also measures 1 with
each background removal (`data.background`, paper 002 §6.3: the mask read and applied per
image), with its ratio to 1 (`keep`, the masks unread) on the same files. `--threads 1,2`
also measures 1 with tf.data's thread pool limited to each count (the rate per core, to tell
whether more cores would feed a faster training step).
Each rate comes with the CPU time per image of this process (all threads), which
other load on a shared machine disturbs less than the wall-clock rate.

Usage:
    python benchmarks/input_pipeline.py [--data DIR] [--batches 300] [--batch-size 128] [--threads 1,2]
        [--backgrounds mean,blur]
"""

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from portrait_keras.data.annotations import read_annotations
from portrait_keras.data.synthportrait import dataset as synthetic


def pipeline_rate(annotations, batch_size, batches, warmup, training=True, threads=None):
    import tensorflow as tf

    from portrait_keras.data.pipeline import make_dataset

    dataset = make_dataset(annotations, "train", batch_size=batch_size, training=training, seed=0).repeat()
    if threads:  # tf.data's own pool (every parallel map and the prefetch run on it)
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])  # the evaluation pipeline keeps each epoch's last, short batch
    images.numpy()
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / count


def pil_rate(paths, count):
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        with Image.open(paths[i % len(paths)]) as image:
            np.asarray(image.convert("RGB").resize((128, 256), Image.BILINEAR), np.float32)
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="SynthPortrait folder (generated there if missing)")
    parser.add_argument("--identities", type=int, default=120)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", help="comma-separated thread counts for the training pipeline (e.g. 1,2)")
    parser.add_argument("--backgrounds", help="comma-separated background removals to time too (mean, blur)")
    args = parser.parse_args()
    backgrounds = args.backgrounds.split(",") if args.backgrounds else []
    if any(b not in ("mean", "blur") for b in backgrounds):
        parser.error(f"--backgrounds takes mean and/or blur. Received: {args.backgrounds!r}")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else []
    if any(t < 1 for t in threads):
        parser.error(f"--threads must be positive integers. Received: {args.threads!r}")
    masks = "-masks" if backgrounds else ""
    folder = args.data or os.path.join(tempfile.gettempdir(), f"synthportrait-bench-{args.identities}{masks}")
    csv_path = os.path.join(folder, "annotations.csv")
    if not os.path.exists(csv_path):
        synthetic.generate(folder, identities=args.identities, masks=bool(backgrounds))
    annotations = read_annotations(csv_path)
    paths = annotations.paths("train")
    print(f"data: {csv_path} ({len(paths)} train images), {os.cpu_count()} CPUs")

    fast, fast_cpu = pipeline_rate(annotations, args.batch_size, args.batches, args.warmup)
    plain, plain_cpu = pil_rate(paths, args.batches * args.batch_size // 4)
    decode, decode_cpu = pipeline_rate(annotations, args.batch_size, args.batches // 3, args.warmup, training=False)
    rows = [
        (f"tf.data training pipeline (augmented, batch {args.batch_size})", fast, fast_cpu),
        ("PIL loop, 1 process (open, RGB, resize, numpy)", plain, plain_cpu),
        ("tf.data evaluation pipeline (decode, resize)", decode, decode_cpu),
    ]
    for n in threads:
        rate, cpu = pipeline_rate(annotations, args.batch_size, args.batches // 2, args.warmup, threads=n)
        rows.append((f"tf.data training pipeline, {n} thread(s)", rate, cpu))
    if backgrounds and not annotations.has_masks:
        raise SystemExit(f"error: {csv_path} has no mask column: --backgrounds needs a set with masks")
    removed = []
    for background in backgrounds:
        masked = annotations.with_background(background)
        rate, cpu = pipeline_rate(masked, args.batch_size, args.batches, args.warmup)
        removed.append((background, rate, cpu))
        rows.append((f"tf.data training pipeline, background={background}", rate, cpu))
    for name, rate, cpu in rows:
        print(f"{name:55s} {rate:7,.0f} images/s  {cpu:.2f} CPU-ms/image")
    print(f"ratio (tf.data / PIL): {fast / plain:.2f}x")
    for background, rate, cpu in removed:
        print(f"ratio (background={background} / keep): {rate / fast:.2f}x, CPU {cpu:.2f} vs {fast_cpu:.2f} ms/image")


if __name__ == "__main__":
    main()
