"""Training throughput: images/s of a full `PortraitTrainer` step (forward, backward, Adam).

The model and objective are those of the `fss_uncert` experiment (FSS head, per-task
classification + Batch Rank losses, uncertainty weighting, Adam with the paper's
schedule), built by `portrait_keras.training.fit.build_trainer`. The batch is one synthetic
in-memory batch (images and labels with unknowns, like a real batch) fed again and again,
so no decoding or augmentation is timed: `tf.data.Dataset.from_tensors(batch).repeat()`
under TensorFlow, the same device arrays from a generator under JAX. Warm-up steps
(tracing and compilation) are left out of the timing; each step ends by reading its loss.

For every backbone and image size the configurations are fp32 or mixed precision
(`mixed_bfloat16`: what `set_precision` picks on CPU) times `jit_compile` off or on;
`ratio` is img/s over that of fp32 without jit for the same backbone and size, measured
in the same run. CPU-ms/img is the process CPU time per image (all threads), which other
load on a shared machine disturbs less than the wall-clock rate.

Usage:
    python benchmarks/train_throughput.py [--quick] [--backbones tiny,resnet50] [--size H W]
        [--batch 16] [--steps 3] [--warmup 1] [--jit off,on] [--precision fp32,mixed]

`--quick` (CI-sized, about 25 s on 2 idle cores, most of it tracing and compiling):
tiny at 128x64, every precision and jit setting, batch 16, 10 timed steps. The default
adds tiny at 256x128 and resnet50 at 256x128 (batch 16, 3 timed steps): tens of minutes
on 2 cores, as a resnet50 step takes seconds, and far longer in bfloat16 on CPUs without
bfloat16 instructions (AVX2-only: about 100 s a step).
The backend is Keras's (`KERAS_BACKEND`, TensorFlow by default); see
`train_throughput_timm.py` for the comparison with PyTorch (timm), and `step_breakdown.py`
for where the time goes.
"""

import argparse
import dataclasses
import os
import time

import numpy as np

from portrait_keras.schema import IDENTITY, MULTI, default_schema

# Image sizes per backbone: 256x128 is the paper's; 128x64 is the CPU training size of tiny.
SIZES = {"tiny": ((256, 128), (128, 64)), "resnet50": ((256, 128),), "hrnet_w32": ((256, 128),)}
NUM_IDS = 751  # Market-1501's training identities: sizes the re-id classifier
UNKNOWN_FRACTION = 0.2  # labels left unknown (-1) per classification task


@dataclasses.dataclass(frozen=True)
class Setting:
    """One measured configuration."""

    backbone: str
    image_size: tuple
    batch: int
    mixed: bool
    jit: bool

    @property
    def precision(self):
        return "mixed_bfloat16" if self.mixed else "float32"


def synthetic_batch(schema, num_ids, batch, image_size, seed=0):
    """One batch like the training pipeline's: images 0..255 and labels with unknowns.

    Args:
        schema: `Schema`. The tasks.
        num_ids: int. Re-id classes; ids come in groups of 4 images so metric losses
            have positives.
        batch: int. Batch size.
        image_size: (height, width).
        seed: int. Seed of the values.

    Returns:
        `(images, labels)`: float32 `[batch, H, W, 3]`; dict task -> int32 `[batch]`
        (-1 unknown) or float32 multi-hot `[batch, C]` (a row of -1 when unknown).
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, *image_size, 3)).astype(np.float32)
    labels = {}
    for task in schema.tasks:
        unknown = rng.random(batch) < UNKNOWN_FRACTION
        if task.kind == IDENTITY:
            ids = rng.choice(num_ids, -(-batch // 4), replace=False).repeat(4)[:batch]
            labels[task.name] = np.where(unknown, -1, ids).astype(np.int32)
        elif task.kind == MULTI:
            hot = (rng.random((batch, task.num_classes)) < 0.2).astype(np.float32)
            hot[np.arange(batch), rng.integers(0, task.num_classes, batch)] = 1.0
            hot[unknown] = -1.0
            labels[task.name] = hot
        else:
            labels[task.name] = np.where(unknown, -1, rng.integers(0, task.num_classes, batch)).astype(np.int32)
    return images, labels


def step_timer(warmup, steps):
    """A Keras callback timing (wall and CPU) the steps after `warmup`; each step is
    waited for by reading its loss, as a progress bar does."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = float(keras.ops.convert_to_numpy(logs["loss"]))
            if batch == warmup - 1:
                self.start, self.cpu = time.perf_counter(), time.process_time()
            elif batch == warmup + steps - 1:
                self.wall = time.perf_counter() - self.start
                self.cpu = time.process_time() - self.cpu
                self.loss = loss

    return StepTimer()


def in_memory(images, labels):
    """The batch as something `fit` repeats without copying or decoding."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors((images, labels)).repeat()
    if backend == "jax":
        import jax

        batch = jax.device_put((images, labels))

        def forever():
            while True:
                yield batch

        return forever()
    raise ValueError(f"Backends tensorflow and jax are supported. Received: KERAS_BACKEND={backend}")


def measure(setting, steps, warmup=2, num_ids=NUM_IDS):
    """Trains `steps` timed steps (after `warmup`) of `fss_uncert` at `setting`.

    Returns:
        dict with `img_s`, `ms_step`, `cpu_ms_img` and the last `loss`.
    """
    import keras

    keras.backend.clear_session()
    return prepare(setting, steps, warmup, num_ids)()


def prepare(setting, steps, warmup=2, num_ids=NUM_IDS):
    """Builds the `fss_uncert` trainer at `setting` (seed 0) and returns `run()`, which trains
    `warmup` untimed + `steps` timed steps and returns what `measure` does. The train
    function is traced by the first `run()` only, so runs of several trainers built in one
    process can alternate (same-run comparisons, fastest of N).
    """
    import keras

    from portrait_keras import experiments as configs
    from portrait_keras.training.fit import build_trainer

    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup and steps must be >= 1. Received: warmup={warmup}, steps={steps}")
    schema = default_schema()
    base = configs.fss_uncert()
    config = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, image_size=tuple(setting.image_size), batch_size=setting.batch),
        model=dataclasses.replace(base.model, backbone=setting.backbone),
        train=dataclasses.replace(base.train, mixed_precision=setting.mixed, jit_compile=setting.jit),
    )
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(setting.precision)
    try:
        _, trainer = build_trainer(config, schema, num_ids, steps_per_epoch=warmup + steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    data = in_memory(*synthetic_batch(schema, num_ids, setting.batch, setting.image_size))

    def run():
        timer = step_timer(warmup, steps)
        keras.mixed_precision.set_global_policy(setting.precision)  # as when it was built
        try:
            trainer.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
        finally:
            keras.mixed_precision.set_global_policy("float32")
        images = steps * setting.batch
        return {
            "img_s": images / timer.wall,
            "ms_step": 1000 * timer.wall / steps,
            "cpu_ms_img": 1000 * timer.cpu / images,
            "loss": timer.loss,
        }

    return run


def settings(backbones, batch, jits, precisions, sizes=None):
    """The configurations to measure, fp32 without jit first for each backbone and size.

    Args:
        backbones: list of str. Keys of `SIZES`.
        batch: int. Batch size.
        jits: list of `"off"`/`"on"`.
        precisions: list of `"fp32"`/`"mixed"`.
        sizes: list of (height, width) or None. Image sizes for every backbone; None
            uses `SIZES`.
    """
    out = []
    for backbone in backbones:
        if backbone not in SIZES:
            raise ValueError(f"Unknown backbone. Allowed: {', '.join(SIZES)}. Received: {backbone!r}")
        for size in sizes or SIZES[backbone]:
            for mixed in sorted(p == "mixed" for p in precisions):
                for jit in sorted(j == "on" for j in jits):
                    out.append(Setting(backbone, tuple(size), batch, mixed, jit))
    return out


def format_table(rows, backend):
    """A Markdown table of `(Setting, result)` with the ratio to fp32/no-jit of the same model and size."""
    base = {}
    for s, r in rows:
        if not s.mixed and not s.jit:
            base[(s.backbone, s.image_size)] = r["img_s"]
    lines = [
        "| backend | backbone | size | batch | precision | jit | img/s | ms/step | CPU-ms/img | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in rows:
        ref = base.get((s.backbone, s.image_size))
        ratio = f"{r['img_s'] / ref:.2f}" if ref else "n/a"
        lines.append(
            f"| {backend} | {s.backbone} | {s.image_size[0]}x{s.image_size[1]} | {s.batch} | {s.precision} | "
            f"{'on' if s.jit else 'off'} | {r['img_s']:.1f} | {r['ms_step']:.0f} | {r['cpu_ms_img']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def _list(text, allowed, name):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"{name}: expected a comma-separated subset of {', '.join(allowed)}. Received: {text!r}"
        )
    return items


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (see above)")
    parser.add_argument(
        "--backbones",
        type=lambda t: _list(t, tuple(SIZES), "--backbones"),
        default=None,
        help="comma-separated (default tiny,resnet50; --quick: tiny)",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="one image size for every backbone (default: 256x128, and 128x64 for tiny; --quick: 128x64)",
    )
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 3, --quick 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, >= 1 (default 1)")
    parser.add_argument(
        "--jit",
        type=lambda t: _list(t, ("off", "on"), "--jit"),
        default=["off", "on"],
        help="comma-separated jit_compile settings (default off,on)",
    )
    parser.add_argument(
        "--precision",
        type=lambda t: _list(t, ("fp32", "mixed"), "--precision"),
        default=["fp32", "mixed"],
        help="comma-separated (default fp32,mixed)",
    )
    args = parser.parse_args(argv)
    backbones = args.backbones or (["tiny"] if args.quick else ["tiny", "resnet50"])
    sizes = [tuple(args.size)] if args.size else ([(128, 64)] if args.quick else None)
    steps = args.steps or (10 if args.quick else 3)

    import keras

    backend = keras.backend.backend()
    todo = settings(backbones, args.batch, args.jit, args.precision, sizes)
    print(
        f"backend {backend}, {os.cpu_count()} CPUs, {len(todo)} settings, {args.warmup} warm-up + {steps} "
        f"timed steps each",
        flush=True,
    )
    rows = []
    start = time.perf_counter()
    for setting in todo:
        result = measure(setting, steps, args.warmup)
        rows.append((setting, result))
        print(
            f"  {setting.backbone} {setting.image_size[0]}x{setting.image_size[1]} {setting.precision} "
            f"jit {'on' if setting.jit else 'off'}: {result['img_s']:.1f} img/s (loss {result['loss']:.3f})",
            flush=True,
        )
    print(format_table(rows, backend))
    print(f"total {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
