"""Where a training step's time goes: our heads and losses, and BatchNormalization, vs timm.

    python benchmarks/step_breakdown.py [--backbone hrnet_w32] [--size 256 128] [--batch 8]
        [--steps 3] [--warmup 1] [--precision fp32] [--jit {on,off}] [--timm]

Rows, each on one synthetic batch (`train_throughput.synthetic_batch`) under the current
Keras backend (`KERAS_BACKEND`), warm-up steps left out:

1. trainer: the `fss_uncert` trainer of `train_throughput.measure` (backbone, FSS head,
   a BNNeck and classifier per task, classification + Batch Rank losses, uncertainty
   weighting, Adam);
2. backbone: the same backbone, one Dense classifier over the re-id classes and
   cross-entropy, Adam;
3. backbone without BN: 2 with every `BatchNormalization` replaced by a pass-through
   (`keras.models.clone_model`);

and with `--timm` (needs torch and timm) the same two for timm's model of that name with a
Linear classifier: with and without its `BatchNorm2d` layers (eager, channels-last), in a
subprocess (PyTorch and TensorFlow in one process crash).

Prints a table and three figures: what the heads and losses add to the bare backbone
(1 against 2), what BatchNormalization costs each framework (2 against 3), and keras/torch
with and without BN. A reading for a CPU is in RESULTS.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# With --timm, JAX must leave GPU memory to the PyTorch subprocess.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import train_throughput  # noqa: E402  (after the environment above)
from train_throughput_timm import RESULT, TIMM_MODELS  # noqa: E402  (the torch subprocess's JSON line)

from portrait_keras.schema import default_schema  # noqa: E402


def _timed(step, steps, warmup):
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def without_batchnorm(model):
    """A copy of the functional `model` with every `BatchNormalization` replaced by a pass-through layer."""
    import keras

    class PassThrough(keras.layers.Layer):  # takes BN's call arguments (`mask`, `training`)
        def call(self, inputs, mask=None, training=None):
            return inputs

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return PassThrough(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def keras_bare_step(backbone_name, image_size, batch, num_ids, precision, jit, batchnorm=True):
    """Seconds a step of backbone + Dense + cross-entropy takes, as a function `(steps, warmup) -> s`.

    The model is built under the precision policy asked for; call the function before
    building another model.
    """
    import keras

    from portrait_keras.models.backbones import build_backbone

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        backbone = build_backbone(backbone_name, input_shape=(*image_size, 3))
        if not batchnorm:
            backbone = without_batchnorm(backbone)
        inputs = keras.Input((*image_size, 3))
        logits = keras.layers.Dense(num_ids, dtype="float32")(backbone(inputs))
        model = keras.Model(inputs, logits)
        model.compile(
            keras.optimizers.Adam(3.5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit
        )
        images, labels = train_throughput.synthetic_batch(default_schema(), num_ids, batch, image_size)

        def run(steps, warmup):
            # The trainer's loop (`fit` on the in-memory batch, timed by callback), so rows 1-3 differ by model only.
            data = train_throughput.in_memory(images, labels["id"].clip(0))
            timer = train_throughput.step_timer(warmup, steps)
            model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
            return timer.wall / steps

        return run
    finally:
        keras.mixed_precision.set_global_policy("float32")


def torch_bare_step(timm_model, image_size, batch, num_ids, precision, batchnorm=True):
    """As `keras_bare_step`, for timm's model with a Linear classifier."""
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as timm's train.py; XLA tunes its kernels too
    torch.manual_seed(0)
    net = timm.create_model(timm_model, pretrained=False, num_classes=num_ids)
    if not batchnorm:

        def strip(module):
            for name, child in module.named_children():
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(module, name, torch.nn.Identity())
                else:
                    strip(child)

        strip(net)
    net = net.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3.5e-4)
    images, labels = train_throughput.synthetic_batch(default_schema(), num_ids, batch, image_size)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels["id"].clip(0)).long().to(device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    return lambda steps, warmup: _timed(step, steps, warmup)


def torch_rows(args):
    """Rows 4 and 5 (timm with and without BN); run in a process without TensorFlow."""
    import timm
    import torch

    name = f"torch {torch.__version__}, timm {timm.__version__} (eager)"
    rows = []
    for batchnorm in (True, False):
        run = torch_bare_step(args.timm_model, tuple(args.size), args.batch, args.num_ids, args.precision, batchnorm)
        rows.append(
            (name, f"{args.timm_model} + Linear" + ("" if batchnorm else ", no BN"), run(args.steps, args.warmup))
        )
        print(RESULT + json.dumps(rows[-1]), flush=True)  # each row as soon as measured
    return rows


def breakdown(args, argv):
    """The rows `(framework, variant, seconds per step)` of the module docstring."""
    import keras

    size = tuple(args.size)
    jit = args.jit == "on"
    setting = train_throughput.Setting(args.backbone, size, args.batch, args.precision == "bf16", jit)
    trainer = train_throughput.measure(setting, args.steps, args.warmup, num_ids=args.num_ids)
    name = f"keras {keras.__version__} ({keras.backend.backend()}, jit {args.jit})"
    rows = []

    def add(row):  # shown at once: a run cut short keeps what it measured in its log
        rows.append(tuple(row))
        print(f"measured: {row[0]} | {row[1]} | {1000 * row[2]:.1f} ms/step", flush=True)

    add((name, "trainer (FSS head, 8 tasks, Batch Rank, uncertainty)", trainer["ms_step"] / 1000))
    for batchnorm in (True, False):
        run = keras_bare_step(args.backbone, size, args.batch, args.num_ids, args.precision, jit, batchnorm)
        add((name, "backbone + Dense" + ("" if batchnorm else ", no BN"), run(args.steps, args.warmup)))
    if args.timm:
        with subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *argv, "--torch-rows"], stdout=subprocess.PIPE, text=True
        ) as process:
            for line in process.stdout:
                if line.startswith(RESULT):
                    add(json.loads(line[len(RESULT) :]))
                else:
                    print(line, end="", flush=True)
        if process.returncode or len(rows) != 5:
            # The Keras rows stand; `main` prints their summary and exits with 1.
            print(
                f"error: the torch rows failed (exit status {process.returncode}); see the output above",
                file=sys.stderr,
            )
            args.torch_failed = True
            del rows[3:]
    return rows


def summary(rows, batch):
    """The table and the figures of the module docstring, as lines."""
    lines = ["| framework | variant | img/s | ms/step |", "|---|---|---|---|"]
    lines += [f"| {f} | {v} | {batch / s:.1f} | {1000 * s:.1f} |" for f, v, s in rows]
    trainer, bare, bare_no_bn = (s for _, _, s in rows[:3])
    lines.append(
        f"heads and losses: {1000 * (trainer - bare):+.1f} ms/step over the bare backbone "
        f"({(trainer - bare) / trainer:+.0%} of the trainer's step)"
    )
    lines.append(
        f"BatchNormalization, keras: {1000 * (bare - bare_no_bn):.1f} ms/step "
        f"({(bare - bare_no_bn) / bare:.0%} of the bare step)"
    )
    if len(rows) == 5:
        torch_bare, torch_no_bn = rows[3][2], rows[4][2]
        lines.append(
            f"BatchNormalization, torch: {1000 * (torch_bare - torch_no_bn):.1f} ms/step "
            f"({(torch_bare - torch_no_bn) / torch_bare:.0%} of the bare step)"
        )
        lines.append(f"keras / torch img/s: {torch_bare / bare:.2f} with BN, {torch_no_bn / bare_no_bn:.2f} without")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="hrnet_w32", choices=sorted(train_throughput.SIZES))
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(256, 128))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, >= 1 (default 1)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--jit",
        choices=("on", "off"),
        help="jit_compile of the keras rows (default: on under JAX, off under TensorFlow)",
    )
    parser.add_argument("--num-ids", type=int, default=train_throughput.NUM_IDS, help="re-id classes")
    parser.add_argument("--timm", action="store_true", help="also timm's model with and without BN")
    parser.add_argument("--timm-model", help="timm model (default: the backbone's name)")
    parser.add_argument("--torch-rows", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be >= 1. Received: {args.warmup}, {args.steps}")
    args.timm_model = args.timm_model or TIMM_MODELS.get(args.backbone)
    if args.timm and args.timm_model is None:
        parser.error(f"timm has no model like {args.backbone!r}; pass --timm-model NAME")
    if args.torch_rows:  # inside the subprocess, which must not import TensorFlow (via Keras) too
        torch_rows(args)
        return None
    if args.jit is None:
        import keras

        args.jit = "on" if keras.backend.backend() == "jax" else "off"
    rows = breakdown(args, argv)
    print("\n".join(summary(rows, args.batch)))
    if getattr(args, "torch_failed", False):
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main()
