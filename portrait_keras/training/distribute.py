"""Training on several devices and machines: the strategy, and what makes a step on R replicas
the step on one device of the same global batch.

Training code (tf.distribute lives here and in `training.py`, never in models or losses).

What is synchronised under a TensorFlow multi-replica strategy (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`):

- The loss. `PortraitTrainer.compute_loss` gathers every replica's outputs and labels
  (`gather`, differentiable: each replica's gradient flows back to its own rows), computes
  the loss of the whole global batch (masked means over the global count of labelled
  samples, Batch Rank / triplet / HFE over the global batch) and divides it by the replica
  count, as Keras' own losses do (`scale_loss_for_distribution`); the optimizer sums the
  replicas' gradients, so they are the one-device gradients of the global batch.
- BatchNormalization. With `sync_batch_norm` (default on under several replicas) every BN
  layer normalises with the global batch's statistics (`synchronized_batch_norm`), so its
  moving statistics move identically on every replica; `average_moving_statistics` averages
  them across replicas before each evaluation and at the end all the same, so the model
  evaluated during training is the model saved.
- Files. Every worker runs every callback (saving can need collective reads); only the chief
  (worker 0) writes the run folder, the others write to their own temporary folder.

Under JAX, `keras.distribution.DataParallel` runs the step on the global batch as one XLA
program: losses and BN statistics are global by construction, and `gather` is the identity.
"""

import contextlib
import json
import os
import secrets
import tempfile

# Keras is imported inside the functions: `prepare_host_devices` must run before JAX starts.

STRATEGIES = ("auto", "one", "mirrored", "multi_worker")

# Keras versions whose TensorFlow trainer cannot fit under MultiWorkerMirroredStrategy
# (keras-team/keras#20585, tensorflow/tensorflow#72388): `_maybe_symbolic_build` reduces the
# first batch with `strategy.reduce("MEAN")`, and `reduce_per_replica` reduces scalar logs
# along axis 0. `tests/test_distribute_multi_worker.py` checks that plain Keras still fails.
MULTI_WORKER_WORKAROUND_KERAS = ((3, 0), (3, 15))
# The two replaced spots (`multi_worker_workaround`); the test drops each to see Keras fail.
MULTI_WORKER_FIXES = ("symbolic_build", "reduce_per_replica")


class DistributionError(ValueError):
    """A strategy that cannot be set up as asked (bad TF_CONFIG, JAX with TF_CONFIG, ...)."""


def tf_config():
    """The parsed `TF_CONFIG` environment variable (`{}` when unset).

    Raises: DistributionError when it is not a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise DistributionError(f"TF_CONFIG is not valid JSON ({e}). Received: TF_CONFIG={text!r}") from None
    if not isinstance(value, dict):
        raise DistributionError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={text!r}")
    return value


def cluster_workers():
    """Addresses of the workers TF_CONFIG names (`cluster.worker`, plus `cluster.chief`)."""
    cluster = tf_config().get("cluster", {}) or {}
    return list(cluster.get("chief", [])) + list(cluster.get("worker", []))


def worker_index():
    """This process's rank among the workers of TF_CONFIG: 0 is the chief (also without TF_CONFIG)."""
    config = tf_config()
    task = config.get("task", {}) or {}
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return 0
    has_chief = bool((config.get("cluster", {}) or {}).get("chief"))
    return index + 1 if has_chief else index


def is_chief():
    """Whether this process writes the run folder (worker 0, or the only process)."""
    return worker_index() == 0


def resolve_kind(kind="auto", replicas=None):
    """The strategy `kind` means here: `"one"`, `"mirrored"` or `"multi_worker"`.

    `"auto"`: `"multi_worker"` when TF_CONFIG names more than one worker, `"mirrored"` with
    more than one GPU or with `replicas` > 1, else `"one"`.

    Raises: DistributionError for an unknown kind, `replicas` < 1, or multi_worker without
    workers in TF_CONFIG.
    """
    if kind not in STRATEGIES:
        raise DistributionError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={kind!r}")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 1):
        raise DistributionError(f"replicas must be a positive integer. Received: replicas={replicas!r}")
    workers = cluster_workers()
    if kind == "multi_worker" and not workers:
        raise DistributionError(
            'strategy=multi_worker needs TF_CONFIG naming the workers, e.g. TF_CONFIG=\'{"cluster": '
            '{"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
        )
    if kind != "auto":
        return kind
    if len(workers) > 1:
        return "multi_worker"
    if (replicas or 1) > 1 or _gpu_count() > 1:
        return "mirrored"
    return "one"


def _gpu_count():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return len([d for d in jax.devices() if d.platform == "gpu"])
    return 0


def prepare_host_devices(replicas):
    """Before any framework starts: lets `replicas` replicas run on a machine without GPUs.

    Under JAX it sets `XLA_FLAGS=--xla_force_host_platform_device_count=N` (so it must run
    before JAX is imported; `experiments/run.py` calls it first). TensorFlow splits its CPU
    into logical devices in `make_strategy`. No-op for `replicas` None or 1.
    """
    if not replicas or replicas < 2:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={replicas}".strip()


def _tf_devices(replicas):
    """Device names for a `replicas`-way MirroredStrategy: GPUs if there are enough, else
    logical CPU devices (which must be configured before TensorFlow initialises)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if replicas is None:
            return [f"/gpu:{i}" for i in range(len(gpus))]
        if replicas > len(gpus):
            raise DistributionError(f"--replicas {replicas}: only {len(gpus)} GPU(s) here.")
        return [f"/gpu:{i}" for i in range(replicas)]
    replicas = replicas or 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    logical = tf.config.list_logical_devices("CPU") if tf.config.get_logical_device_configuration(cpu) else None
    if logical is None:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError as e:
            raise DistributionError(
                f"{replicas} CPU replicas need the CPU split before TensorFlow starts ({e}); "
                f"ask for them first thing (`--replicas`)."
            ) from None
        logical = tf.config.list_logical_devices("CPU")
    if len(logical) < replicas:
        raise DistributionError(
            f"{replicas} CPU replicas asked for, but TensorFlow already runs with {len(logical)} CPU device(s)."
        )
    return [d.name for d in logical[:replicas]]


def make_strategy(kind="auto", replicas=None):
    """The distribution for training, by name (`STRATEGIES`).

    TensorFlow backend: returns a `tf.distribute.Strategy` (the default one for `"one"`).
    JAX backend: sets `keras.distribution.DataParallel` over `replicas` devices (all when
    None) for `"mirrored"`, and returns None; TF_CONFIG is refused (JAX runs several
    processes through `jax.distributed`, which this package does not set up).

    Raises: DistributionError (see `resolve_kind`; TF_CONFIG under JAX).
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax" and cluster_workers():
        raise DistributionError(
            "TF_CONFIG names workers, but KERAS_BACKEND=jax: multi-worker training here is "
            "TensorFlow's MultiWorkerMirroredStrategy. Unset TF_CONFIG, or use KERAS_BACKEND=tensorflow."
        )
    kind = resolve_kind(kind, replicas)
    if backend == "jax":
        import jax

        if kind == "mirrored":
            devices = jax.devices()
            if replicas is not None:
                if replicas > len(devices):
                    raise DistributionError(
                        f"--replicas {replicas}: JAX sees {len(devices)} device(s) (set --replicas before "
                        f"JAX starts, as experiments/run.py does)."
                    )
                devices = devices[:replicas]
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        else:
            keras.distribution.set_distribution(None)
        return None
    if backend != "tensorflow":
        if kind != "one":
            raise DistributionError(f"strategy={kind!r} needs the TensorFlow or JAX backend. Received: {backend}")
        return None
    import tensorflow as tf

    if kind == "one":
        if replicas not in (None, 1):
            raise DistributionError(f"strategy=one runs one replica. Received: replicas={replicas}")
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        if replicas not in (None, 1) and not tf.config.list_physical_devices("GPU"):
            _tf_devices(replicas)  # CPU replicas per worker
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy(_tf_devices(replicas))


def num_replicas(strategy=None):
    """Replicas that share a global batch: the TF strategy's (the current one when None), or
    JAX's data-parallel devices."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return (strategy or tf.distribute.get_strategy()).num_replicas_in_sync
    distribution = keras.distribution.distribution()
    if distribution is not None and hasattr(distribution, "device_mesh"):
        return int(distribution.device_mesh.shape[0])
    return 1


def describe(strategy, batch_size):
    """What runs where, for the start line and config.json: a dict of strategy, workers,
    replicas, global and per-replica batch.

    Raises: DistributionError when the global batch does not split evenly.
    """
    import keras

    replicas = num_replicas(strategy)
    if batch_size % replicas:
        raise DistributionError(
            f"data.batch_size={batch_size} does not split over {replicas} replicas; choose a multiple of {replicas}."
        )
    if is_multi_worker(strategy):
        name = "MultiWorkerMirroredStrategy"
    elif keras.backend.backend() == "tensorflow":
        name = type(strategy).__name__
        name = "OneDevice" if name.startswith("_Default") else name
    else:
        name = "DataParallel" if replicas > 1 else "OneDevice"
    return {
        "strategy": name,
        "backend": keras.backend.backend(),
        "workers": len(cluster_workers()) if is_multi_worker(strategy) else 1,
        "worker_index": worker_index() if is_multi_worker(strategy) else 0,
        "replicas": replicas,
        "global_batch": batch_size,
        "per_replica_batch": batch_size // replicas,
    }


def in_replica_group():
    """Whether the code runs inside a TF replica context of several replicas."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx is not None and ctx.num_replicas_in_sync > 1


def gather(structure):
    """Every replica's rows of `structure` (tensors `[b, ...]`) concatenated along axis 0, in
    replica order, on every replica; the identity outside a multi-replica TF replica context.

    Differentiable for float tensors: the gradient of the gathered tensor is summed across
    replicas and each replica keeps the slice of its own rows (`ReplicaContext.all_gather`).
    Integer tensors are gathered without gradient.
    """
    import keras

    if not in_replica_group():
        return structure
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    local_devices = tf.distribute.get_strategy().extended.worker_devices

    def one(x):
        x = tf.convert_to_tensor(x)
        if len(local_devices) == 1:
            # MultiWorkerMirroredStrategy with one device per worker takes the destination of
            # all_gather from the tensor's device, which is empty inside a tf.function.
            with tf.device(local_devices[0]):
                x = tf.identity(x)
        out = ctx.all_gather(x, axis=0)
        rows = x.shape[0] * ctx.num_replicas_in_sync if x.shape[0] is not None else None
        out.set_shape([rows, *x.shape[1:]])  # all_gather drops the static shape
        return out

    return keras.tree.map_structure(one, structure)


def scale_for_replicas(loss):
    """`loss` divided by the replica count inside a multi-replica TF replica context (whose
    gradients the optimizer sums), as Keras' `scale_loss_for_distribution`; else `loss`."""
    if not in_replica_group():
        return loss
    import tensorflow as tf

    return loss / float(tf.distribute.get_replica_context().num_replicas_in_sync)


def batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` in `model`, nested models included."""
    import keras

    layers = model._flatten_layers(include_self=False)
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


@contextlib.contextmanager
def synchronized_batch_norm(model, enabled=True):
    """Within the block, every BatchNormalization of `model` normalises training batches with
    the statistics of the global batch (all replicas; Keras' `synchronized=True`, TensorFlow
    backend), as SyncBN in the re-id toolkits. The layers' configs are restored on exit, so a
    saved model carries `synchronized=False` and loads on every backend.

    Must be entered before the train step is traced (around `fit`).
    """
    import keras

    layers = batch_norm_layers(model) if enabled and keras.backend.backend() == "tensorflow" else []
    before = [layer.synchronized for layer in layers]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.synchronized = value


def average_moving_statistics(strategy, model):
    """Sets every BN moving mean and variance of `model` to its mean over the replicas, on
    every replica (TensorFlow multi-replica strategies; no-op otherwise). Every worker must
    call it (it is a collective)."""
    import keras

    if keras.backend.backend() != "tensorflow" or strategy is None or strategy.num_replicas_in_sync < 2:
        return
    import tensorflow as tf

    variables = [v.value for layer in batch_norm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]
    if not variables:
        return

    @tf.function
    def run():
        def average():
            ctx = tf.distribute.get_replica_context()
            means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v) for v in variables])
            for v, m in zip(variables, means):
                v.assign(m)

        strategy.run(average)

    run()


def broadcast_from_chief(strategy, value):
    """The chief's int `value` on every worker (MultiWorkerMirroredStrategy; `value` itself
    otherwise). Every worker must call it (it is a collective)."""
    import keras

    if keras.backend.backend() != "tensorflow" or strategy is None or not is_multi_worker(strategy):
        return int(value)
    import tensorflow as tf

    mine = tf.constant(int(value) if is_chief() else 0, tf.int64)

    @tf.function
    def run():
        def send():
            ctx = tf.distribute.get_replica_context()
            first = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), tf.int64)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine * first)

        return strategy.run(send)

    return int(strategy.experimental_local_results(run())[0])


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes."""
    import keras

    if keras.backend.backend() != "tensorflow" or strategy is None:
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def draw_seed():
    """A fresh training seed (for a config without one)."""
    return secrets.randbelow(2**31 - 1)


def worker_write_dir(run_dir):
    """Where this worker writes: `run_dir` for the chief, else a fresh temporary folder of its
    own (the tf.distribute guide's rule for checkpoints), removed by the caller at the end."""
    if is_chief():
        return os.fspath(run_dir)
    return tempfile.mkdtemp(prefix=f"portrait_keras_worker{worker_index()}_")


def keras_version():
    import keras

    return tuple(int(p) for p in keras.__version__.split(".")[:2])


def needs_multi_worker_workaround(version=None):
    """Whether this Keras has the multi-worker bugs of `MULTI_WORKER_WORKAROUND_KERAS`."""
    low, high = MULTI_WORKER_WORKAROUND_KERAS
    return low <= (version or keras_version()) <= high


@contextlib.contextmanager
def multi_worker_workaround(trainer, strategy):
    """Within the block, `trainer.fit` runs under MultiWorkerMirroredStrategy on the Keras
    versions of `MULTI_WORKER_WORKAROUND_KERAS` (keras-team/keras#20585); a no-op for other
    strategies and versions. Two spots of Keras' TensorFlow trainer are replaced:

    - `_maybe_symbolic_build` builds from the first local replica's batch instead of
      `strategy.reduce("MEAN")` of the batch (which fails on a PerReplica batch there);
    - `reduce_per_replica` averages the replicas' scalar logs with `axis=None` (Keras passes
      `axis=0`, "Invalid reduction dimension 0 for input with 0 dimensions").

    Yields: whether it was applied.
    """
    if not is_multi_worker(strategy) or not needs_multi_worker_workaround():
        yield False
        return
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(_first_local(strategy), next(it))
                break
        with strategy.scope():
            trainer._symbolic_build(data_batch=data_batch)

    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy_):
            return keras.tree.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy_, reduction)

    if "symbolic_build" in MULTI_WORKER_FIXES:
        trainer._maybe_symbolic_build = symbolic_build
    if "reduce_per_replica" in MULTI_WORKER_FIXES:
        tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield True
    finally:
        tf_trainer.reduce_per_replica = keras_reduce
        trainer.__dict__.pop("_maybe_symbolic_build", None)


def _first_local(strategy):
    import tensorflow as tf

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return first
