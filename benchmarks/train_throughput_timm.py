"""Training throughput against timm: our Keras model vs timm's in PyTorch, same batch and device.

    python benchmarks/train_throughput_timm.py [--backbone hrnet_w32] [--size 256 128] [--batch 128]
        [--precision bf16] [--steps 20] [--warmup 3] [--torch-compile] [--keras-only] [--timm-model NAME]
        [--keras-backend jax] [--jit on] [--bn both|fused|keras] [--repeats 1]

Two halves, each in its own process (JAX takes most of the GPU memory up front, so they
cannot share one), on the same synthetic in-memory batch (`train_throughput.synthetic_batch`,
already on the device):

- keras: the `fss_uncert` trainer of `train_throughput.measure` (backbone, FSS head with a
  BNNeck and classifier per task, classification + Batch Rank losses, uncertainty
  weighting, Adam), policy `mixed_bfloat16` for bf16; by default `KERAS_BACKEND=jax` with
  `jit_compile=True` (the GPU setting: the GPU machine has JAX but no TensorFlow);
  `--keras-backend tensorflow --jit off` is the CPU default path of the package;
- torch: `timm.create_model(NAME, num_classes=0)` (its pooled feature; timm's `hrnet_w32`
  is the same HRNet-W32-C with the 2048-d head as ours: 39,183,680 parameters in both)
  -> a BatchNorm1d neck (our BNNecks, shared) -> one bias-free Linear classifier per task
  with our class counts; cross-entropy with unknown labels (-1) masked, multi-label BCE for
  expression, Adam; `torch.autocast(bfloat16)` for bf16, channels-last memory, and on CUDA
  `cudnn.benchmark` (as timm's train.py: cuDNN tunes its kernels as XLA does); eager, or
  also `torch.compile` with `--torch-compile` (a failure there is reported, the eager row kept).

The heads and losses differ a little (ours splits the feature into task subspaces and
adds Batch Rank and uncertainty weighting); both are negligible beside the backbone
(measured on CPU: the whole trainer steps as fast as the bare backbone with one
classifier). timm's `resnet50` is ResNet v1.5 (stride on the 3x3 conv, ~6% more FLOPs than
our keras.applications v1), so its ratio slightly flatters Keras; the HRNets are identical.
BatchNormalization (`--bn`, issue #19): the keras half builds the trainer with our
`portrait_keras.models.batch_norm.BatchNormalization` (TensorFlow's fused kernel under the TF
backend), with Keras' own (unfused under TF), or, by default under TensorFlow, both: two
trainers from the same seed in one process, timed alternately (the order flipping each
round). `--repeats N` times N rounds and keeps each row's fastest; with the torch half too,
both halves then run side by side in lockstep (each built once, taking turns round by
round), so a shared machine's load hits every row alike. CPU time per image (the process's,
all threads) is printed beside the wall-clock rate. On a shared, loaded CPU pass
`--omp-passive`: PyTorch's OpenMP threads otherwise spin while they wait for each other and
a step takes several times longer (measured: 3.5 s instead of 0.4 s of CPU for a ResNet-50
step at load 13 on 2 cores); TensorFlow's thread pools do not spin.
Both halves wait for each step's loss, as a progress bar does; warm-up steps (compilation)
are not timed. Each row is printed as soon as it is measured (a run cut short keeps what it
measured), then a table and the ratios keras/torch and fused/keras BN of images/s.

Without torch or timm the torch half is skipped with a message and the exit status is 2
(`--keras-only` skips it on purpose). On a CPU (see RESULTS.md):
`--batch 8 --precision fp32 --keras-backend tensorflow --jit off`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import train_throughput

from portrait_keras.schema import IDENTITY, MULTI, default_schema

HERE = os.path.dirname(os.path.abspath(__file__))

TIMM_MODELS = {"hrnet_w32": "hrnet_w32", "resnet50": "resnet50"}
# As `portrait_keras.models.preprocessing` (not imported: it would load Keras in the torch half).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESULT = "RESULT "  # prefix of a half's JSON line on stdout
READY, DONE = "LOCKSTEP ready", "LOCKSTEP done"  # a --lockstep half's lines: built; a round's rows out
MISSING_TORCH = 3  # exit status of the torch half without torch/timm
# The keras half's BatchNormalization (`--bn`): ours (TF's fused kernel under TensorFlow, Keras'
# code elsewhere) or Keras' own (unfused under TensorFlow).
BN_VARIANTS = {"fused": "fused (ours)", "keras": "keras"}


def emit(row):
    """A half's result row, on stdout at once: the parent shows it before the next is measured."""
    print(RESULT + json.dumps(row), flush=True)


def rounds(args):
    """The timed rounds of a half: `--repeats` in a row, or under `--lockstep` (set by the parent
    running both halves) one per "go" line on stdin, each answered by a "done" line once its
    rows are out, so the parent can alternate the two halves round by round."""
    if not args.lockstep:
        yield from range(args.repeats)
        return
    print(READY, flush=True)
    for number, line in enumerate(sys.stdin):
        if line.strip() != "go":
            return
        yield number
        print(DONE, flush=True)


def keras_half(args):
    """Images/s of the Keras trainer under the current backend, one row per BatchNormalization
    variant (`--bn`) and round: the variants built side by side, timed alternately (the order
    flipping each round), each row emitted when measured."""
    import keras

    from portrait_keras.models.batch_norm import fused_batch_norm

    jit = args.jit == "on"
    setting = train_throughput.Setting(args.backbone, tuple(args.size), args.batch, args.precision == "bf16", jit)
    variants = list(BN_VARIANTS) if args.bn == "both" else [args.bn]
    keras.backend.clear_session()
    runs = {}
    for variant in variants:
        with fused_batch_norm(variant == "fused"):
            runs[variant] = train_throughput.prepare(setting, args.steps, args.warmup, num_ids=args.num_ids)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = f"jax {jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    else:
        import tensorflow as tf

        device = f"tensorflow {'gpu' if tf.config.list_physical_devices('GPU') else 'cpu'}"
    for number in rounds(args):
        for variant in variants if number % 2 == 0 else variants[::-1]:  # neither always first
            emit(
                {
                    "framework": f"keras {keras.__version__}",
                    "model": args.backbone,
                    "compile": "jit (XLA)" if jit else "no jit",
                    "bn": BN_VARIANTS[variant],
                    "device": device,
                    "round": number + 1,
                    **runs[variant](),
                }
            )


def torch_half(args):
    """Images/s of timm's model with an equivalent neck, heads and losses, eager and compiled;
    each row emitted when measured."""
    try:
        import timm
        import torch
    except ImportError as e:
        print(f"torch half skipped: {e}. It needs PyTorch and timm (pip install torch timm).", file=sys.stderr)
        sys.exit(MISSING_TORCH)
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    schema = default_schema()
    images, labels = train_throughput.synthetic_batch(schema, args.num_ids, args.batch, tuple(args.size))
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    y = {name: torch.from_numpy(value).to(device) for name, value in labels.items()}
    y = {t.name: y[t.name].float() if t.kind == MULTI else y[t.name].long() for t in schema.tasks}
    classes = {t.name: args.num_ids if t.kind == IDENTITY else t.num_classes for t in schema.tasks}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.create_model(args.timm_model, pretrained=False, num_classes=0)
            dim = self.backbone.num_features
            self.neck = torch.nn.BatchNorm1d(dim)
            self.heads = torch.nn.ModuleDict({n: torch.nn.Linear(dim, c, bias=False) for n, c in classes.items()})

        def forward(self, images):
            feature = self.neck(self.backbone((images - mean) / std))
            return {n: head(feature) for n, head in self.heads.items()}

    def objective(outputs):
        total = 0.0
        for task in schema.tasks:
            logits, target = outputs[task.name].float(), y[task.name]
            if task.kind == MULTI:  # rows of -1 are unknown; masks, not indexing, avoid a sync
                known = (target >= 0).all(1).float()
                bce = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), reduction="none").mean(1)
                total = total + (bce * known).sum() / known.sum().clamp(min=1)
            else:
                total = total + F.cross_entropy(logits, target, ignore_index=-1)
        return total

    runs = {compiled: _torch_runner(args, Net, objective, x, device, compiled) for compiled in [False, True]}
    if not args.torch_compile:
        del runs[True]
    for number in rounds(args):
        for compiled in list(runs):
            try:
                emit({**runs[compiled](), "round": number + 1})
            except Exception as e:  # noqa: BLE001  torch.compile can fail in many ways; eager is the reference
                if not compiled:
                    raise
                del runs[compiled]
                print(f"torch.compile failed, its row left out: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def _torch_runner(args, Net, objective, x, device, compiled):
    """`run()` giving one torch row: `Net` (built once) trained for warm-up + timed steps, eager
    or compiled."""
    import timm
    import torch

    torch.manual_seed(0)
    net = Net().to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3.5e-4)
    forward = torch.compile(net) if compiled else net

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = objective(forward(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the step, like the Keras half

    def run():
        for _ in range(args.warmup):
            step()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            loss = step()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        return {
            "framework": f"torch {torch.__version__}, timm {timm.__version__}",
            "model": args.timm_model,
            "compile": "torch.compile" if compiled else "eager",
            "bn": "BatchNorm2d",
            "device": f"torch {device}: {name}",
            "img_s": args.steps * args.batch / wall,
            "ms_step": 1000 * wall / args.steps,
            "cpu_ms_img": 1000 * cpu / (args.steps * args.batch),
            "loss": loss,
        }

    return run


def run_half(half, argv, keras_backend="jax", on_row=None):
    """Runs one half in a subprocess. Returns `(rows, exit status)`: the rows it emitted,
    each also passed to `on_row` as it arrives, even when the half fails later."""
    env = dict(os.environ)
    if half == "keras":
        env["KERAS_BACKEND"] = keras_backend
    elif "--omp-passive" in argv:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    rows = []
    with subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--half", half, *argv], env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        for line in process.stdout:
            if line.startswith(RESULT):
                rows.append(json.loads(line[len(RESULT) :]))
                if on_row:
                    on_row(rows[-1])
            else:
                print(line, end="", flush=True)
    return rows, process.returncode


def run_lockstep(argv, keras_backend, repeats, on_row=None):
    """Runs both halves at once, each in its subprocess under `--lockstep`: both build, then
    round by round one half times while the other waits (keras first in odd rounds, torch
    first in even ones), so a shared machine's load hits both alike. Returns `(rows, {half:
    exit status})`; a half that stops early (no torch) leaves the other to go on alone."""
    envs = {"keras": dict(os.environ, KERAS_BACKEND=keras_backend), "torch": dict(os.environ)}
    if "--omp-passive" in argv:
        envs["torch"]["OMP_WAIT_POLICY"] = "PASSIVE"
    processes = {
        half: subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--half", half, "--lockstep", *argv],
            env=envs[half],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for half in ("keras", "torch")
    }
    rows = []

    def until(half, marker):
        """Reads `half`'s output up to `marker`; False when it ended first."""
        for line in processes[half].stdout:
            if line.startswith(RESULT):
                rows.append(json.loads(line[len(RESULT) :]))
                if on_row:
                    on_row(rows[-1])
            elif line.strip() == marker:
                return True
            else:
                print(line, end="", flush=True)
        return False

    alive = {half: until(half, READY) for half in processes}
    for number in range(repeats):
        for half in ("keras", "torch") if number % 2 == 0 else ("torch", "keras"):
            if alive[half]:
                processes[half].stdin.write("go\n")
                processes[half].stdin.flush()
                alive[half] = until(half, DONE)
    statuses = {}
    for half, process in processes.items():
        process.stdin.close()
        until(half, None)  # what it prints on its way out
        statuses[half] = process.wait()
    return rows, statuses


def fastest(rows):
    """The fastest row of each (framework, model, compile, BN) over the rounds, first-seen order."""
    best = {}
    for row in rows:
        key = (row["framework"], row["model"], row["compile"], row.get("bn"))
        if key not in best or row["img_s"] > best[key]["img_s"]:
            best[key] = row
    return list(best.values())


def format_row(r):
    cpu = f", {r['cpu_ms_img']:.0f} CPU-ms/img" if "cpu_ms_img" in r else ""
    return (
        f"{r['framework']} | {r['model']} | {r['compile']} | BN {r.get('bn', '?')} | {r['device']} | "
        f"{r['img_s']:.1f} img/s{cpu}"
    )


def format_table(rows, args):
    lines = [
        "| framework | model | size | batch | precision | compile | BN | device | img/s | ms/step | CPU-ms/img "
        "| ratio to torch eager | ratio to keras BN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    unfused = next((r["img_s"] for r in rows if r.get("bn") == BN_VARIANTS["keras"]), None)
    reference = next((r["img_s"] for r in rows if r["framework"].startswith("torch")), None)
    for r in rows:
        ratio = f"{r['img_s'] / reference:.2f}" if reference else "n/a"
        to_keras_bn = f"{r['img_s'] / unfused:.2f}" if unfused else "n/a"
        cpu = f"{r['cpu_ms_img']:.0f}" if "cpu_ms_img" in r else "n/a"
        lines.append(
            f"| {r['framework']} | {r['model']} | {args.size[0]}x{args.size[1]} | {args.batch} | {args.precision} | "
            f"{r['compile']} | {r.get('bn', '?')} | {r['device']} | {r['img_s']:.1f} | {r['ms_step']:.0f} | {cpu} | "
            f"{ratio} | {to_keras_bn} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="hrnet_w32", choices=sorted(train_throughput.SIZES))
    parser.add_argument("--timm-model", help="timm model of the torch half (default: the backbone's name)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(256, 128))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, >= 1 (default 3)")
    parser.add_argument("--num-ids", type=int, default=train_throughput.NUM_IDS, help="re-id classes")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--keras-only", action="store_true", help="skip the torch half")
    parser.add_argument(
        "--keras-backend", choices=("jax", "tensorflow"), default="jax", help="backend of the keras half (default jax)"
    )
    parser.add_argument(
        "--jit",
        choices=("on", "off"),
        default="on",
        help="jit_compile of the keras half (default on; off is the CPU default under tensorflow)",
    )
    parser.add_argument(
        "--bn",
        choices=("both", *BN_VARIANTS),
        help="BatchNormalization of the keras half: ours (fused under TF), Keras' own, or both timed "
        "alternately in one process (default: both under tensorflow, fused under jax)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed rounds, the fastest of each row kept; with both halves they run side by side and "
        "take turns, round by round (default 1)",
    )
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE for the torch half: on a shared, loaded CPU OpenMP's spinning "
        "threads make PyTorch's steps several times slower (TensorFlow does not use OpenMP)",
    )
    parser.add_argument("--half", choices=("keras", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error(
            f"--warmup, --steps and --repeats must be >= 1. Received: {args.warmup}, {args.steps}, {args.repeats}"
        )
    if args.bn is None:
        args.bn = "both" if args.keras_backend == "tensorflow" else "fused"
    if args.timm_model is None:
        args.timm_model = TIMM_MODELS.get(args.backbone)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.half:  # inside a subprocess: a JSON line per row for the parent
        keras_half(args) if args.half == "keras" else torch_half(args)
        return 0

    print(
        f"{args.backbone} {args.size[0]}x{args.size[1]}, batch {args.batch}, {args.precision}, "
        f"{args.warmup} warm-up + {args.steps} timed steps; keras on {args.keras_backend}, jit {args.jit}",
        flush=True,
    )
    rows, status = [], 0

    def show(row):  # at once: a device call cut short still leaves these lines in its log
        keras_rows = [r for r in rows if r["framework"].startswith("keras") and r.get("round") == row.get("round")]
        ratio = ""
        if keras_rows and row["framework"].startswith("torch"):
            ratio = "".join(
                f"; keras, BN {k.get('bn', '?')} / torch ({row['compile']}): {k['img_s'] / row['img_s']:.2f}"
                for k in keras_rows
            )
        where = f"round {row['round']}: " if "round" in row else ""
        print(f"measured: {where}{format_row(row)}{ratio}", flush=True)

    def collect(row):
        rows.append(row)
        show(row)

    both = not args.keras_only and args.timm_model is not None
    if both and args.repeats > 1:
        _, statuses = run_lockstep(argv, args.keras_backend, args.repeats, on_row=collect)
        keras_status, torch_status = statuses["keras"], statuses["torch"]
        keras_rows = [r for r in rows if r["framework"].startswith("keras")]
    else:
        keras_rows, keras_status = run_half("keras", argv, args.keras_backend, on_row=collect)
        torch_status = None
    if keras_status or not keras_rows:
        print(f"error: the keras half failed (exit status {keras_status}); see its output above", file=sys.stderr)
        return 1
    if args.keras_only:
        pass
    elif args.timm_model is None:
        print(f"torch half skipped: timm has no model like {args.backbone!r}; pass --timm-model NAME.", file=sys.stderr)
        status = 2
    else:
        if torch_status is None:
            _, torch_status = run_half("torch", argv, on_row=collect)
        if torch_status == MISSING_TORCH:
            status = 2
        elif torch_status:
            print(
                f"error: the torch half failed (exit status {torch_status}); its rows so far are kept", file=sys.stderr
            )
            status = 1
    rows = fastest(rows)
    if args.repeats > 1:
        print(f"fastest of {args.repeats} rounds:")
    print(format_table(rows, args))
    keras_rows = [r for r in rows if r["framework"].startswith("keras")]
    for r in (r for r in rows if r["framework"].startswith("torch")):
        for k in keras_rows:
            print(f"ratio keras, BN {k.get('bn', '?')} / torch ({r['compile']}): {k['img_s'] / r['img_s']:.2f}")
    by_bn = {r.get("bn"): r for r in keras_rows}
    fused, plain = by_bn.get(BN_VARIANTS["fused"]), by_bn.get(BN_VARIANTS["keras"])
    if fused and plain:
        print(
            f"ratio fused BN / keras BN: {fused['img_s'] / plain['img_s']:.2f} img/s "
            f"({fused['cpu_ms_img']:.0f} vs {plain['cpu_ms_img']:.0f} CPU-ms/img)"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
