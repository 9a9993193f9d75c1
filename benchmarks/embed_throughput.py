"""Gallery embedding throughput: `embed`/`search` over a folder of JPEGs vs `model.predict` (issue #19).

    python benchmarks/embed_throughput.py [--images 512] [--backbone tiny] [--size 256 128]
        [--batch 64] [--repeats 3] [--data DIR] [--quick]

Writes (or reuses, `--data`) a SynthPortrait set and takes its first `--images` JPEGs as a
gallery folder (symbolic links), saves a freshly built `PortraitModel` (`--backbone`, all
tasks) as `.keras` and loads it with `load_predictor`, as the commands do. Then, alternately
`--repeats` times (the order flipping each repeat), the fastest run of each kept:

- `embed`: `serving.embed.embed_data(predictor, folder)`, the `portrait-keras embed` path
  (files found, decoded, resized, model run, probabilities and embeddings gathered);
- `search`: `serving.search.embed(predictor, paths)`, the gallery embedding of `search`;
- floor: `model.predict(images, batch_size)` on the same images already decoded in memory
  (uint8, as `Predictor` feeds the model): what any file-based path can approach at best;
- on_batch: `model.predict_on_batch` over the same in-memory batches, the call `Predictor`
  makes (no `tf.data` iterator per call, as `predict` builds): a stricter floor, also printed.

Prints images/s and CPU-ms/img (this process, all threads; other load on a shared machine
disturbs it less than the wall-clock rate) of each, and the ratio of each path to the floor.
Goal: `embed` >= 0.8x the floor on 2 cores. The first run of each path (tracing the predict
function) is a warm-up, not timed. `--quick` (CI, untimed): 16 images at 64x32, batch 8,
one repeat.
"""

import argparse
import os
import tempfile
import time

import numpy as np

PATHS = ("embed", "search", "floor", "on_batch")


def gallery_folder(data_dir, count, out_dir):
    """`out_dir` holding links to the first `count` JPEGs of a SynthPortrait set in `data_dir`
    (written there first when it has none)."""
    from portrait_keras.data.images import image_files_below
    from portrait_keras.data.synthportrait import dataset as synthetic

    images = os.path.join(data_dir, "images")
    if not os.path.isdir(images) or len(image_files_below(images)) < count:
        # About 2.5 images per (identity x images_per_identity), with the unknown-id ones.
        synthetic.generate(data_dir, identities=max(2, count // 18 + 2), images_per_identity=8)
    files = image_files_below(images)[:count]
    if len(files) < count:
        raise SystemExit(f"error: {data_dir}: only {len(files)} images, {count} asked for")
    os.makedirs(out_dir, exist_ok=True)
    for i, path in enumerate(files):
        os.symlink(os.path.abspath(path), os.path.join(out_dir, f"{i:06d}.jpg"))
    return out_dir


def save_model(backbone, size, path):
    """A freshly built `PortraitModel` with every task, saved as `.keras`."""
    import keras

    from portrait_keras.models import build_portrait_model
    from portrait_keras.schema import default_schema

    keras.utils.set_random_seed(0)
    model = build_portrait_model(default_schema(), 100, backbone=backbone, input_shape=(*size, 3))
    model.save(path)
    return path


def timed(function):
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu


def measure(predictor, folder, batch, repeats, log=print):
    """`{path: (images/s, CPU-ms/img)}` of `PATHS`, the fastest of `repeats` alternating runs
    after one untimed run each; checks that every path gives the floor's embeddings."""
    from portrait_keras.data.images import image_files_below, read_images
    from portrait_keras.serving import embed, search

    files = image_files_below(folder)
    images = read_images(files, predictor.image_size)  # uint8, as `Predictor` feeds the model
    model = predictor._model
    runs = {
        "embed": lambda: embed.embed_data(predictor, folder, batch_size=batch)["embeddings"],
        "search": lambda: search.embed(predictor, files, batch_size=batch),
        "floor": lambda: np.asarray(model.predict(images, batch_size=batch, verbose=0)["embedding"]),
        "on_batch": lambda: np.concatenate(
            [
                np.asarray(model.predict_on_batch(images[i : i + batch])["embedding"])
                for i in range(0, len(images), batch)
            ]
        ),
    }
    reference = runs["floor"]()
    for name, run in runs.items():  # warm-up: traces each path's predict function
        np.testing.assert_allclose(run(), reference, rtol=1e-4, atol=1e-4, err_msg=name)
    best = {}
    for repeat in range(repeats):
        for name in PATHS if repeat % 2 == 0 else PATHS[::-1]:
            _, wall, cpu = timed(runs[name])
            rate, cpu_ms = len(files) / wall, 1000 * cpu / len(files)
            log(f"  repeat {repeat + 1}, {name}: {rate:.1f} img/s, {cpu_ms:.2f} CPU-ms/img")
            if name not in best or rate > best[name][0]:
                best[name] = (rate, cpu_ms)
    return best


def format_table(best, args):
    floor, on_batch = best["floor"][0], best["on_batch"][0]
    lines = [
        "| path | images | backbone | size | batch | img/s | CPU-ms/img | ratio to floor | ratio to on_batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PATHS:
        rate, cpu_ms = best[name]
        lines.append(
            f"| {name} | {args.images} | {args.backbone} | {args.size[0]}x{args.size[1]} | {args.batch} | "
            f"{rate:.1f} | {cpu_ms:.2f} | {rate / floor:.2f} | {rate / on_batch:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="gallery images (default 512)")
    parser.add_argument("--backbone", default="tiny", help="backbone of the model (default tiny)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(256, 128))
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64, as embed's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path, alternating (default 3)")
    parser.add_argument("--data", help="SynthPortrait folder to reuse or write (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="CI-sized, untimed: 16 images at 64x32, batch 8")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size, args.batch, args.repeats = 16, (64, 32), 8, 1
    if min(args.images, args.batch, args.repeats) < 1:
        parser.error(
            f"--images, --batch and --repeats must be >= 1. Received: {args.images}, {args.batch}, {args.repeats}"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    from portrait_keras.serving.predictor import load_predictor

    with tempfile.TemporaryDirectory() as tmp:
        folder = gallery_folder(args.data or os.path.join(tmp, "synth"), args.images, os.path.join(tmp, "gallery"))
        predictor = load_predictor(save_model(args.backbone, tuple(args.size), os.path.join(tmp, "model.keras")))
        print(
            f"{args.images} JPEGs, {args.backbone} at {args.size[0]}x{args.size[1]}, batch {args.batch}, "
            f"{os.cpu_count()} CPUs, {args.repeats} repeats (fastest kept)",
            flush=True,
        )
        best = measure(predictor, folder, args.batch, args.repeats, log=lambda line: print(line, flush=True))
    print(format_table(best, args))
    for name in ("embed", "search"):
        print(
            f"ratio {name} / floor: {best[name][0] / best['floor'][0]:.2f} (goal >= 0.8); "
            f"/ on_batch: {best[name][0] / best['on_batch'][0]:.2f}; CPU-ms/img {best[name][1]:.2f} vs "
            f"{best['floor'][1]:.2f} and {best['on_batch'][1]:.2f}"
        )
    return best


if __name__ == "__main__":
    main()
