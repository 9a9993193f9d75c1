"""Attribute propagation against masked training on SynthPortrait with three label sources
(paper 004, Tables 5 and 7, on data where the hidden truth is known).

1. Generates `portrait-keras synth OUT/data --sources 3` (once): three source datasets, each
   labelled for its own tasks (`portrait_keras.data.synthportrait.sources`), and `truth.csv`.
2. Trains two runs of the same experiment (`fss_ap` unless `--experiment`) with the same seed,
   data order and learning-rate schedule: **masked** (`ap_rounds = 0`, `epochs + rounds`
   epochs: every missing label only masked) and **+AP** (`epochs` of masked training, then
   `rounds` rounds of propagation plus one epoch of fine-tuning each). Both differ only in
   the pseudo labels of the last `rounds` epochs.
3. Prints, in Markdown:
   - Table 5 style: per task, the share of training images labelled, Macro F1 and balanced
     accuracy (eq. 18) of both runs on the query + gallery images, scored against the truth;
   - Table 7 style: per round, the accuracy of the filled labels against the truth (the
     kNN start of propagation, then every round), the pseudo labels' use, and the mean
     test balanced accuracy of both runs after the same epoch;
   - the threshold study: of the last round's pseudo labels, the share whose posterior is
     at least t and their accuracy, for several t (`train.ap_threshold`).

    python benchmarks/ap_demo.py --identities 60 --images-per-identity 8 --epochs 20 --rounds 5

A filled multi-label row counts as right only when all its columns are.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from portrait_keras import experiments as configs

SPLITS = ("query", "gallery")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ap_demo", help="folder of the data and both runs")
    p.add_argument("--experiment", default="fss_ap", choices=["fss_ap", "sim_mtl_ap"])
    p.add_argument("--identities", type=int, default=60)
    p.add_argument("--images-per-identity", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20, help="stage-1 epochs (masked training)")
    p.add_argument("--rounds", type=int, default=5, help="propagation rounds M (one epoch each)")
    p.add_argument("--threshold", type=float, default=0.0, help="train.ap_threshold of the +AP run")
    p.add_argument("--space", default="task", choices=["task", "joint"], help="train.ap_space of the +AP run")
    p.add_argument("--image-size", type=int, nargs=2, default=(128, 64))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=configs.SYNTHETIC_LR)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_config(args, csv_path, ap):
    """The experiment on the demo data: tiny backbone, the CPU recipe's rate and one late decay
    (at 80 % of stage 1, in both runs); `ap` picks the +AP run, else the masked one."""
    c = configs.get(args.experiment)
    train = dataclasses.replace(
        c.train,
        warmup_epochs=min(args.epochs - 1, round(args.epochs * c.train.warmup_epochs / c.train.epochs)),
        lr=args.lr,
        warmup_lr=args.lr / 10,
        decay_epochs=(max(1, round(configs.SYNTHETIC_DECAY_AT * args.epochs)),),
        seed=args.seed,
        eval_every=0,  # the demo scores the test images itself, at the rounds' ends
        ap_rounds=args.rounds if ap else 0,
        ap_epochs=1,
        ap_threshold=args.threshold,
        ap_space=args.space if ap else "task",
        epochs=args.epochs if ap else args.epochs + args.rounds,
    )
    return dataclasses.replace(
        c,
        name=f"{args.experiment}_ap_{args.space}" if ap else f"{args.experiment}_masked",
        data=dataclasses.replace(
            c.data,
            csv=os.fspath(csv_path),
            image_size=tuple(args.image_size),
            batch_size=args.batch_size,
            p=max(args.batch_size // c.data.k, 1),
            erasing_probability=configs.SYNTHETIC_ERASING,
        ),
        model=dataclasses.replace(c.model, backbone="tiny", backbone_weights=None, backbone_kwargs={}),
        train=train,
    )


def score_test_images(model, truth, tasks, batch_size):
    """Per task `(macro F1, balanced accuracy)` of `model` on the query + gallery images."""
    from portrait_keras import metrics
    from portrait_keras.evaluation.evaluator import classification_predictions, predict_split

    outputs = {s: predict_split(model, truth, s, batch_size=batch_size)[0] for s in SPLITS}
    scores = {}
    for task in tasks:
        y_true = np.concatenate([truth.labels(s)[task.name] for s in SPLITS])
        y_pred = np.concatenate([classification_predictions(task, outputs[s][task.name]) for s in SPLITS])
        scores[task.name] = (metrics.macro_f1(y_true, y_pred), metrics.balanced_accuracy(y_true, y_pred))
    return scores


def scoring_callback(truth, tasks, batch_size, epochs, record):
    """A Keras callback scoring the model on the test images after each epoch of `epochs`."""
    import keras

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 in epochs:
                record[epoch + 1] = score_test_images(self.model.portrait, truth, tasks, batch_size)

    return Score()


def filled_accuracy(truth_labels, given, pseudo, task):
    """Accuracy against the truth of `pseudo` on the train rows where `given` is unknown and
    `pseudo` is not (below a threshold a row stays unknown)."""
    from portrait_keras.training.propagation_rounds import unknown_rows

    rows = unknown_rows(given) & ~unknown_rows(pseudo)
    if task.kind == "multi":
        right = (pseudo[rows] == truth_labels[rows]).all(axis=1)
    else:
        right = pseudo[rows] == truth_labels[rows]
    return float(right.mean()), rows


def majority_labels(y):
    """Every row given the most common known label (row of a multi-label task) of `y`."""
    from portrait_keras.training.propagation_rounds import unknown_rows

    known = y[~unknown_rows(y)]
    values, counts = np.unique(known, axis=0, return_counts=True)
    return np.repeat(values[np.argmax(counts)][None], len(y), axis=0).reshape(y.shape)


def main(argv=None):
    args = parse_args(argv)
    from portrait_keras.data import read_annotations
    from portrait_keras.data.synthportrait import generate
    from portrait_keras.data.synthportrait.sources import TRUTH_FILE
    from portrait_keras.training.fit import train

    data = os.path.join(args.out, "data")
    csv_path = os.path.join(data, "annotations.csv")
    if not os.path.exists(os.path.join(data, TRUTH_FILE)):
        generate(data, args.identities, args.seed, args.images_per_identity, sources=3)
    given, truth = read_annotations(csv_path), read_annotations(os.path.join(data, TRUTH_FILE))
    tasks = [t for t in given.schema.tasks if t.kind in ("single", "multi")]
    checkpoints = {args.epochs + m for m in range(args.rounds + 1)}
    truth_train = truth.labels("train")

    records, seconds = {}, {}
    for ap in (False, True):
        config = make_config(args, csv_path, ap)
        run_dir = os.path.join(args.out, config.name)
        saved = os.path.join(run_dir, "demo_scores.json")
        if os.path.exists(saved) and os.path.exists(os.path.join(run_dir, "metrics.json")):
            # A finished run of the same config and seed (its config.json says): its scores as they were.
            with open(saved, encoding="utf-8") as f:
                kept = json.load(f)
            if kept["config"] == json.loads(config.to_json()):
                records[ap] = {int(e): {t: tuple(v) for t, v in s.items()} for e, s in kept["scores"].items()}
                seconds[ap] = kept["seconds"]
                print(f"{run_dir}: finished, its scores reused", file=sys.stderr)
                continue
        records[ap] = {}
        cb = scoring_callback(truth, tasks, args.batch_size, checkpoints, records[ap])
        start = time.perf_counter()
        train(config, run_dir=run_dir, verbose="quiet", report=False, callbacks=[cb])
        seconds[ap] = time.perf_counter() - start
        with open(saved, "w", encoding="utf-8") as f:
            json.dump({"config": json.loads(config.to_json()), "scores": records[ap], "seconds": seconds[ap]}, f)
    ap_dir = os.path.join(args.out, make_config(args, csv_path, True).name, "propagation")
    if not os.path.isdir(ap_dir):
        raise SystemExit(f"error: {ap_dir} is missing: the +AP run wrote no round")

    final = args.epochs + args.rounds
    labelled = {t.name: float(1 - np.mean(_unknown(given.labels("train")[t.name]))) for t in tasks}
    print(
        f"\n{given.num_images('train')} train images ({given.num_images('query')} query, "
        f"{given.num_images('gallery')} gallery), {args.experiment}, tiny backbone "
        f"{args.image_size[0]}x{args.image_size[1]}, {args.epochs} masked epochs + {args.rounds} rounds; "
        f"threshold {args.threshold}, space {args.space}; "
        f"masked run {seconds[False]:.0f} s, +AP run {seconds[True]:.0f} s\n"
    )
    print("Per task on the query + gallery images, against the truth (Table 5 style):\n")
    print("| task | labelled (train) | Macro F1 masked | Macro F1 +AP | Δ | bal. acc. masked | bal. acc. +AP | Δ |")
    print("|---|---|---|---|---|---|---|---|")
    sums = np.zeros(4)
    for t in tasks:
        (f0, b0), (f1, b1) = records[False][final][t.name], records[True][final][t.name]
        sums += (f0, f1, b0, b1)
        print(
            f"| {t.name} | {labelled[t.name]:.0%} | {f0:.3f} | {f1:.3f} | {f1 - f0:+.3f} | {b0:.3f} | {b1:.3f} | "
            f"{b1 - b0:+.3f} |"
        )
    f0, f1, b0, b1 = sums / len(tasks)
    print(f"| **mean** | | {f0:.3f} | {f1:.3f} | {f1 - f0:+.3f} | {b0:.3f} | {b1:.3f} | {b1 - b0:+.3f} |")

    print("\nPer round (Table 7 style): filled-label accuracy on the train images whose label was missing")
    print("(against the truth), the same for the network's own classifier decisions on those images")
    print("(means over the single-label tasks), and the mean test balanced accuracy of both runs after the")
    print("same epoch:\n")
    header = ["round"] + [t.name for t in tasks]
    header += ["mean filled (single-label)", "classifier (single-label)", "bal. acc. masked", "bal. acc. +AP"]
    y_given = y_given_all = given.labels("train")
    majority = [
        filled_accuracy(truth_train[t.name], y_given[t.name], majority_labels(y_given[t.name]), t)[0] for t in tasks
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    single = [a for a, t in zip(majority, tasks) if t.kind == "single"]
    cells = [f"{a:.3f}" for a in majority] + [f"{np.mean(single):.3f}", "-", "-", "-"]
    print("| majority class of the known labels | " + " | ".join(cells) + " |")
    last = None
    for m in range(args.rounds + 1):
        epoch = args.epochs + m
        cells = []
        if m == 0:
            cells = ["-"] * len(tasks) + ["-", "-"]
        else:
            arrays = np.load(os.path.join(ap_dir, f"round_{m}.npz"))
            trained = read_annotations(os.path.join(ap_dir, f"round_{m}.csv"), root=given.root, schema=given.schema)
            last = arrays, trained.labels("train")
            accs, own = [], []
            for t in tasks:
                if f"{t.name}_label" not in arrays:
                    cells.append("-")
                    continue
                y_given = y_given_all[t.name]
                acc, _ = filled_accuracy(truth_train[t.name], y_given, last[1][t.name], t)
                cells.append(f"{acc:.3f}")
                if t.kind == "single":
                    accs.append(acc)
                    own.append(filled_accuracy(truth_train[t.name], y_given, arrays[f"{t.name}_classifier"], t)[0])
            cells += [f"{np.mean(accs):.3f}", f"{np.mean(own):.3f}"]
        bal = [np.mean([v[1] for v in records[ap][epoch].values()]) for ap in (False, True)]
        label = "0 (after stage 1)" if m == 0 else str(m)
        print(f"| {label} | " + " | ".join(cells) + f" | {bal[0]:.3f} | {bal[1]:.3f} |")

    print("\nThreshold study (last round's pseudo labels): share kept at posterior >= t and their accuracy:\n")
    thresholds = (0.0, 0.5, 0.9, 0.99, 0.999)
    print("| t | " + " | ".join(f"kept / acc. {t}" for t in thresholds) + " |")
    print("|" + "---|" * (len(thresholds) + 1))
    for t in tasks:
        if last is None or f"{t.name}_label" not in last[0]:
            continue
        conf = last[0][f"{t.name}_confidence"]
        rows = ~np.isnan(conf) & ~_unknown(last[1][t.name])  # the pseudo labels trained on
        pseudo, want = last[1][t.name][rows], truth_train[t.name][rows]
        right = (pseudo == want).all(axis=1) if t.kind == "multi" else pseudo == want
        cells = []
        for th in thresholds:
            keep = conf[rows] >= th
            cells.append(f"{keep.mean():.0%} / {right[keep].mean():.3f}" if keep.any() else "0% / -")
        print(f"| {t.name} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "ap_demo.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "scores": {str(k): v for k, v in records.items()}}, f, indent=1, default=str)
    return 0


def _unknown(y):
    from portrait_keras.training.propagation_rounds import unknown_rows

    return unknown_rows(y)


if __name__ == "__main__":
    sys.exit(main())
