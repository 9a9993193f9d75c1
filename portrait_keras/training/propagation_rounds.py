"""The second stage of paper 004's Algorithm 1: alternating attribute propagation and fine-tuning.

Stage 1 is the ordinary masked training (`train.epochs` epochs: a missing label adds no
loss). With `train.ap_rounds = M`, `fit.train` then runs M rounds, each of:

1. features of the training split (no augmentation) from the current weights;
2. `portrait_keras.propagation.propagate_labels` on them: every missing label of every
   attribute task (single- and multi-label; never the identity task, which is open set)
   gets a pseudo label and its posterior (eq. 11);
3. `train.ap_epochs` epochs of fine-tuning on the ground truth plus the pseudo labels whose
   posterior is at least `train.ap_threshold`.

Ground truth is never overwritten: only cells that are empty in the annotation CSV are
filled, and every round starts again from the original annotations (a pseudo label of round
m is not a "known" label of round m + 1).

Pseudo labels by threshold, not by weight: a label below the threshold stays masked, one
above it counts as a ground-truth label. This keeps the data pipeline and the losses as
they are (a weighted label would need a per-label weight through tf.data and every masked
loss). `benchmarks/ap_demo.py` measures the choice (README, "Filling missing labels").

The filled labels reach the data pipeline as an annotation table: round M writes
`RUN_DIR/propagation/round_M.csv` (the original CSV with the filled train cells; image paths
still relative to the original dataset root), `round_M.json` (counts, posterior changes) and
`round_M.npz` (every pseudo label `<task>_label` and its confidence `<task>_confidence`, NaN
for known labels, and the network's own decision `<task>_classifier`, in train-split order,
for measuring the threshold and the propagation), and the training
split is rebuilt from the table. A resumed run reuses the table of the round it
stopped in, so it fine-tunes on the same labels the killed run did.

Feature space (the `x_i` of eq. 3 and the weights of eq. 2): each task's BNNeck input,
standardised by the BNNeck's moving mean and variance, `z_t = (f_t - mu_t) / sqrt(var_t + eps)`;
the classifier of task t reads `gamma_t * z_t`, so its kernel in that space is
`gamma_t[:, None] * W_t`, and the logits are `z_t @ (gamma_t[:, None] * W_t)` exactly.
With `sim_mtl` every task reads the whole vector: one MRF over one copy of `z`, each kernel
rescaled by its BNNeck's `gamma_t * s_ref / s_t`. With the Feature Space Split head the tasks
read different sub-vectors, and `train.ap_space` chooses:

- `"task"` (the default): one MRF per task on its own `z_t`. The neighbours and Gaussians of
  a task are those of the features its classifier reads.
- `"joint"`: one MRF on the concatenated `z_t`, each kernel zero outside its task's block.
  Its co-occurrence prior is nearly void (weight vectors on disjoint supports are nearly
  uncorrelated), and the kNN graph and the 64 principal components are dominated by the
  other tasks' (and the identity's) subspaces. On `benchmarks/ap_demo.py` (README) its
  filled labels were less accurate than the network's own classifier decisions.
"""

import dataclasses
import json
import os
import shutil
import sys

import keras
import numpy as np

from portrait_keras.data import read_annotations
from portrait_keras.data.sources import portable_table
from portrait_keras.evaluation.evaluator import classification_predictions, predict_split
from portrait_keras.propagation import PropagationResult, propagate_labels
from portrait_keras.schema import MULTI, SINGLE


def total_epochs(train):
    """Epochs of a whole run: stage 1 plus `ap_rounds * ap_epochs` of stage 2."""
    return train.epochs + train.ap_rounds * train.ap_epochs


def round_of_epoch(train, epoch):
    """The round (1-based) that Keras epoch `epoch` (0-based) belongs to; 0 in stage 1."""
    return 0 if epoch < train.epochs else (epoch - train.epochs) // train.ap_epochs + 1


def propagation_tasks(model, annotations):
    """The model's attribute tasks that can be propagated: single- or multi-label, with at
    least one known and one missing label in the training split."""
    labels = annotations.labels("train")
    out = []
    for name in model.tasks:
        task = annotations.schema.task(name)
        if task.kind not in (SINGLE, MULTI):
            continue
        y = labels[name].reshape(len(labels[name]), -1)
        known = (y >= 0).all(axis=1)
        if known.any() and not known.all():
            out.append(task)
    return out


def feature_space(model, outputs, tasks):
    """The propagation features and each task's classifier kernel in their space (module docstring).

    Args:
        model: the `PortraitModel` (its `<task>_bnneck` and `<task>_classifier` layers).
        outputs: dict of numpy model outputs (`"<task>_feature"` `[N, d_t]`).
        tasks: list of `Task`.

    Returns:
        `(features, kernels)`: float32 `[N, D]`, dict task → float32 `[D, C_t]` with
        `features @ kernels[t]` equal to task t's logits.
    """

    def standardised(name):
        neck = model.get_layer(f"{name}_bnneck")
        mean = keras.ops.convert_to_numpy(neck.moving_mean).astype(np.float64)
        scale = np.sqrt(keras.ops.convert_to_numpy(neck.moving_variance).astype(np.float64) + neck.epsilon)
        gamma = keras.ops.convert_to_numpy(neck.gamma).astype(np.float64) if neck.scale else np.ones_like(mean)
        kernel = keras.ops.convert_to_numpy(model.get_layer(f"{name}_classifier").kernel).astype(np.float64)
        return (outputs[f"{name}_feature"] - mean) / scale, scale, gamma[:, None] * kernel

    if getattr(model, "head", "fss") == "sim_mtl":
        z, ref, _ = standardised(tasks[0].name)
        kernels = {}
        for t in tasks:
            _, scale, kernel = standardised(t.name)
            kernels[t.name] = (ref / scale)[:, None] * kernel  # the same input, its own BN scale
        return z.astype(np.float32), {k: v.astype(np.float32) for k, v in kernels.items()}
    blocks, raw = [], {}
    for t in tasks:
        z, _, kernel = standardised(t.name)
        blocks.append(z)
        raw[t.name] = kernel
    features = np.concatenate(blocks, axis=1)
    kernels, start = {}, 0
    for t, z in zip(tasks, blocks):
        padded = np.zeros((features.shape[1], raw[t.name].shape[1]))
        padded[start : start + z.shape[1]] = raw[t.name]
        kernels[t.name] = padded.astype(np.float32)
        start += z.shape[1]
    return features.astype(np.float32), kernels


def unknown_rows(y):
    """Rows of labels `y` (`[N]` or `[N, C]`) whose label is unknown (`-1`)."""
    return ~(np.asarray(y).reshape(len(y), -1) >= 0).all(axis=1)


def confidence(task, posterior):
    """Posterior confidence of each row's filled label: the most probable class's probability
    (single-label), or the least sure column's `max(p, 1 - p)` (multi-label)."""
    if task.kind == MULTI:
        return np.min(np.maximum(posterior, 1.0 - posterior), axis=1)
    return np.max(posterior, axis=1)


def pseudo_labels(task, result):
    """`result`'s labels of `task`; a multi-label row with no class present takes its most
    probable class (a CSV cell holds at least one class, and an annotated image shows one)."""
    pseudo = np.array(result.labels[task.name], copy=True)
    if task.kind == MULTI:
        empty = pseudo.sum(axis=1) == 0
        pseudo[empty, np.argmax(result.posteriors[task.name][empty], axis=1)] = 1
    return pseudo


def filled_labels(tasks, labels, result, threshold, rows=None):
    """Ground truth plus the pseudo labels of `result` whose confidence is at least `threshold`.

    Args:
        tasks: list of `Task`.
        labels: dict task → the split's ground truth (`Annotations.labels`), `-1` unknown.
        result: `PropagationResult` over `rows` of the split.
        threshold: float in [0, 1].
        rows: int array, the split positions `result` covers; None = all.

    Returns:
        `(filled, counts)`: dict task → labels like `labels` (known rows unchanged, unknown
        rows below the threshold still `-1`); dict task → `{"missing", "filled", "mean_confidence"}`.
    """
    filled, counts = {}, {}
    for task in tasks:
        truth = labels[task.name]
        out = truth.copy()
        at = np.arange(len(truth)) if rows is None else np.asarray(rows)
        unknown = unknown_rows(truth[at])
        conf = confidence(task, result.posteriors[task.name])
        keep = unknown & (conf >= threshold)
        out[at[keep]] = pseudo_labels(task, result).astype(truth.dtype)[keep]
        filled[task.name] = out
        counts[task.name] = {
            "missing": int(unknown.sum()),
            "filled": int(keep.sum()),
            "mean_confidence": float(conf[unknown].mean()) if unknown.any() else 1.0,
        }
    return filled, counts


def write_filled_table(annotations, tasks, filled, path):
    """Writes `annotations`' CSV with the train cells of `filled` that were empty; returns
    the `Annotations` read back (the original root and schema)."""
    table = portable_table(annotations).copy()  # joined datasets: paths under the common root
    rows = annotations.rows("train")
    truth = annotations.labels("train")
    for task in tasks:
        y, old = filled[task.name], truth[task.name]
        new = unknown_rows(old) & ~unknown_rows(y)
        classes = np.asarray(task.classes, dtype=object)
        if task.kind == MULTI:
            cells = [";".join(classes[np.flatnonzero(r > 0)]) for r in y[new]]
        else:
            cells = list(classes[y[new]])
        table.iloc[rows[new], table.columns.get_loc(task.name)] = cells
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    table.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)  # a kill never leaves half a table for the resume to reuse
    return read_annotations(path, root=annotations.root, schema=annotations.schema)


def round_annotations(state, run, out, m):
    """The annotations round `m` fine-tunes on: read back from the run folder when a resumed
    run had written them, else propagated from the current weights and written."""
    name = f"round_{m}.csv"
    done = os.path.join(run.propagation_dir, name)
    original = state.annotations
    if os.path.exists(done):
        print(f"propagation round {m}: reusing {done}", file=sys.stderr, flush=True)
        return read_annotations(done, root=original.root, schema=original.schema)
    train = state.config.train
    model = state.inference_model()
    tasks = propagation_tasks(model, original)
    if not tasks:
        print(f"propagation round {m}: no attribute label is missing; nothing to fill", file=sys.stderr, flush=True)
        return original
    outputs, rows = predict_split(
        model,
        original,
        "train",
        batch_size=state.config.data.batch_size,
        skip_bad_images=state.config.data.skip_bad_images,
    )
    labels = original.labels("train")
    joint = train.ap_space == "joint" or getattr(model, "head", "fss") == "sim_mtl"
    parts = []
    for group in [tasks] if joint else [[t] for t in tasks]:
        features, kernels = feature_space(model, outputs, group)
        parts.append(
            propagate_labels(
                features,
                {t.name: labels[t.name][rows] for t in group},
                kernels,
                k=train.ap_k,
                seed=(train.seed or 0) + m,
                schema=original.schema,
            )
        )
    result = PropagationResult(
        **{f.name: {k: v for p in parts for k, v in getattr(p, f.name).items()} for f in dataclasses.fields(parts[0])}
    )
    filled, counts = filled_labels(tasks, labels, result, train.ap_threshold, rows)
    annotations = write_filled_table(original, tasks, filled, os.path.join(out.propagation_dir, name))
    info = {
        "round": m,
        "threshold": train.ap_threshold,
        "features": int(features.shape[1]),
        "tasks": {
            t.name: {
                **counts[t.name],
                "posterior_change": list(result.posterior_change[t.name]),
                "converged": result.converged[t.name],
            }
            for t in tasks
        },
    }
    with open(os.path.join(out.propagation_dir, f"round_{m}.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    # Every pseudo label and its confidence, kept or not, for measuring the threshold.
    n = original.num_images("train")
    arrays = {}
    for t in tasks:
        conf = np.full(n, np.nan)
        conf[rows] = np.where(unknown_rows(labels[t.name][rows]), confidence(t, result.posteriors[t.name]), np.nan)
        pseudo = np.full((n, *result.labels[t.name].shape[1:]), -1, result.labels[t.name].dtype)
        pseudo[rows] = pseudo_labels(t, result)
        arrays[f"{t.name}_confidence"], arrays[f"{t.name}_label"] = conf, pseudo
        # What the network's own classifier says (self-training would use it), for comparison.
        own = np.full_like(pseudo, -1)
        own[rows] = classification_predictions(t, outputs[t.name])
        arrays[f"{t.name}_classifier"] = own
    np.savez_compressed(os.path.join(out.propagation_dir, f"round_{m}.npz"), **arrays)
    shown = ", ".join(f"{t} {c['filled']}/{c['missing']}" for t, c in counts.items())
    print(f"propagation round {m}/{train.ap_rounds}: pseudo labels used {shown}", file=sys.stderr, flush=True)
    return annotations


def run_rounds(state, run, out, guard, fit, start_epoch, skip):
    """Stage 2 (module docstring) from `(start_epoch, skip)`, the step a resumed run reached.

    Args:
        state: `fit._Run`.
        run, out: `RunDir` of the shared run folder and of this worker's.
        guard: the `NaNGuard`: a diverged round ends the stage.
        fit: `fit(start_epoch, skip, end)`, fitting epochs `[start_epoch, end)` on
            `state.train_ds` (the epoch `start_epoch` from batch `skip`).
        start_epoch, skip: where the run resumes (`0, 0` for a fresh run).
    """
    train = state.config.train
    if not train.ap_rounds:
        return
    if start_epoch == 0 and skip == 0:
        shutil.rmtree(out.propagation_dir, ignore_errors=True)  # tables of an earlier run in this folder
    original, first_ds = state.annotations, state.train_ds
    try:
        for m in range(max(round_of_epoch(train, start_epoch), 1), train.ap_rounds + 1):
            begin, end = train.epochs + (m - 1) * train.ap_epochs, train.epochs + m * train.ap_epochs
            if guard.diverged:
                return
            state.annotations, state.train_ds = original, first_ds
            filled = round_annotations(state, run, out, m)
            state.annotations = filled
            state.train_ds = state.train_dataset()
            resume = start_epoch >= begin
            fit(start_epoch if resume else begin, skip if resume else 0, end)
    finally:
        state.annotations, state.train_ds = original, first_ds
