#!/usr/bin/env bash
# The GPU part of the speed benchmarks (issue #7) as one device call.
#
# The GPU machine lent through the `device` tool has JAX, PyTorch and timm but neither
# Keras nor TensorFlow, and nothing can be downloaded there. So:
#
#   bash benchmarks/gpu_session.sh prepare     # here: the Keras wheels (Python 3.12) into .whl/
#   # then with the device tool, carry [".whl"], timeout_s 600:
#   bash benchmarks/gpu_session.sh run         # there: results under $OUT
#   bash benchmarks/gpu_session.sh breakdown   # there, if time is left: step_breakdown.py
#
# `run` installs the wheels only when `import keras` fails, so it also runs on any
# machine with Keras, JAX, torch and timm (BENCH_ARGS, appended to the benchmark's
# arguments, shrinks it for a dry run on a CPU). It writes nvidia-smi's view of the GPU,
# then `train_throughput_timm.py` (HRNet-W32, 256x128, batch 128, bf16: Keras on JAX with
# XLA vs timm eager and torch.compile) into $OUT/train_throughput_timm.log. `breakdown`
# writes step_breakdown.py's table (what our heads and losses, and BatchNormalization,
# cost on the GPU, beside timm) into $OUT/step_breakdown.log.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  mkdir -p .whl  # ignored by .gitignore
  keras_version=$(python3 -c 'import importlib.metadata as m; print(m.version("keras"))')
  # Keras and what it needs that the GPU image lacks (its others are there: absl-py,
  # numpy, rich, h5py, ml-dtypes, packaging); the platforms of the device README. Pinned
  # to the versions the dry run used.
  for package in "keras==$keras_version" namex==0.1.0 optree==0.20.0; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$package"
  done
  ls .whl
  du -sh .whl
  ;;
run | breakdown)
  out=${OUT:-/tmp/gpu_session}
  mkdir -p "$out"
  if ! python3 -c 'import keras' 2>/dev/null; then
    ls .whl/*.whl >/dev/null || { echo "error: no .whl/ here: run 'prepare' first and carry .whl" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONUNBUFFERED=1
  versions='import jax, keras; print("jax", jax.__version__, jax.devices(), "keras", keras.__version__)'
  { nvidia-smi || echo "no nvidia-smi"; nproc; KERAS_BACKEND=jax python3 -c "$versions"; } \
    > "$out/machine.txt" 2>&1 || true
  if [ "$1" = breakdown ]; then
    # shellcheck disable=SC2086
    KERAS_BACKEND=jax python3 benchmarks/step_breakdown.py --timm --batch 128 --precision bf16 --jit on \
      --steps 10 --warmup 2 ${BENCH_ARGS:-} 2>&1 | tee "$out/step_breakdown.log"
    exit
  fi
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
  python3 benchmarks/train_throughput_timm.py --torch-compile ${BENCH_ARGS:-} 2>&1 \
    | tee "$out/train_throughput_timm.log"
  ;;
*)
  echo "usage: bash benchmarks/gpu_session.sh {prepare|run|breakdown}" >&2
  exit 2
  ;;
esac
