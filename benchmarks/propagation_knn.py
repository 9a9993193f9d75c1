"""Speed and memory of attribute propagation (`portrait_keras.propagation`) on synthetic features.

Prints, each measured in its own subprocess (so every peak RSS is clean):

- the baseline: the bare blocked product `X @ X.T` of all rows, in the blocks the kNN
  search uses (N^2 D multiply-adds, the floor of any exact kNN graph);
- `nearest_neighbors(X, 10)`, the kNN graph of eq. 6: time, ratio to the baseline, peak RSS;
- `propagate_labels` on three tasks (a 5-class and a 2-class single-label task, a 7-column
  multi-label task, 70 % of each hidden at random): time, ratio, peak RSS, rounds and the
  accuracy of the filled labels. Besides the graph it runs one kNN search per task
  (hidden rows against known ones, 0.21 N^2 D each) and a PCA (N D^2).

The features are float32: a centre per class of each task, summed, plus variation shared by
all classes along 16 directions (larger than the gaps between classes, so Euclidean neighbours
often disagree with the truth) and isotropic noise; generated in blocks so that 250,000 x
2,048 (2 GiB) needs no float64 copy.

`--covariance-study` instead compares ways of keeping the class covariances invertible
(the choice in `portrait_keras/propagation.py`): principal components with Ledoit-Wolf
shrinkage (what the module does), with the plain sample covariance, and Ledoit-Wolf or a
diagonal covariance on all dimensions, by the accuracy of the filled labels on a problem
where Euclidean neighbours are unreliable.

    python benchmarks/propagation_knn.py                          # 20,000 x 256
    python benchmarks/propagation_knn.py --n 250000 --dim 2048    # Portrait250K-sized backbone features
    python benchmarks/propagation_knn.py --covariance-study --n 3000 --dim 1024 --seeds 3

Measured on a shared 2-core AMD EPYC VM (load average 5-6, so CPU seconds are the steadier
figure), 20,000 x 2,048: baseline 15.7 s CPU; `nearest_neighbors` 21.0 s CPU (1.34 x),
peak RSS no higher than making the data (448 MiB); `propagate_labels` 47.1 s CPU (3.00 x),
529 MiB, every task settled in 2 rounds, filled labels 1.000 where the kNN start had
0.807 / 0.972 / 0.796. At 250,000 x 2,048 (1,953 MiB of features) the search of 4,096
query rows against all rows took 66 s CPU at a peak RSS of 2,283 MiB; the whole graph is
then about 61 x that (67 min of CPU here), the propagation about 3 x the baseline.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from portrait_keras import propagation
from portrait_keras.propagation import _BLOCK_BYTES, nearest_neighbors, propagate_labels

TASKS = {"body": 5, "gender": 2, "expression": 7}


def make_data(n, dim, seed=0, hidden=0.7, spread=2.0, nuisance=2.0):
    """Features `[n, dim]` float32, the true labels, the labels with `hidden` of each task -1, kernels."""
    rng = np.random.default_rng(seed)
    truth = {
        "body": rng.integers(0, 5, n),
        "gender": rng.integers(0, 2, n),
        "expression": (rng.random((n, 7)) < 0.3).astype(np.int64),
    }
    centres = {task: rng.normal(0, spread / np.sqrt(dim), (classes, dim)) for task, classes in TASKS.items()}
    # Variation shared by all classes (pose, light...): 16 directions of large spread.
    directions = rng.normal(0, nuisance / np.sqrt(dim), (16, dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    step = max((64 << 20) // (4 * dim), 1)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        count = len(x[rows])
        block = rng.standard_normal((count, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        block += rng.standard_normal((count, 16), dtype=np.float32) @ directions
        block += centres["body"][truth["body"][rows]] + centres["gender"][truth["gender"][rows]]
        block += truth["expression"][rows] @ centres["expression"]
        x[rows] = block
    labels = {}
    for task, y in truth.items():
        hide = rng.random(n) < hidden
        labels[task] = np.where(hide if y.ndim == 1 else hide[:, None], -1, y)
    kernels = {task: c.T for task, c in centres.items()}
    return x, truth, labels, kernels


def study_data(n, dim, separation, seed, hidden=0.7, classes=4, spread_directions=20):
    """Features of 4 classes (40/30/20/10 %): a centre each, spread along 20 shared directions
    by a class-dependent amount, isotropic noise; the truth and the labels with `hidden` -1."""
    rng = np.random.default_rng(seed)
    share = np.array([0.4, 0.3, 0.2, 0.1])
    truth = rng.choice(classes, n, p=share)
    centres = rng.normal(0, 4 * separation / np.sqrt(dim), (classes, dim))
    directions = rng.normal(0, 3 / np.sqrt(dim), (spread_directions, dim))
    scale = rng.uniform(0.5, 1.5, (classes, spread_directions))
    x = centres[truth] + (rng.normal(size=(n, spread_directions)) * scale[truth]) @ directions
    x += rng.normal(0, 0.3, (n, dim))
    return x.astype(np.float32), truth, np.where(rng.random(n) < hidden, -1, truth), rng.normal(size=(dim, classes))


def covariance_study(n, dim, seeds):
    """Filled-label accuracy and time of each way of conditioning the class covariances."""

    def diagonal(centred):
        return np.diag(np.mean(centred**2, axis=0))

    def sample(centred):
        return centred.T @ centred / len(centred)

    everything = 10**9  # pca_dim above D: the Gaussians use all dimensions
    variants = {
        "kNN start (0 rounds)": (64, None),
        "PCA 16 + Ledoit-Wolf": (16, None),
        "PCA 64 + Ledoit-Wolf": (64, None),
        "PCA 64 + sample cov.": (64, sample),
        "PCA 256 + Ledoit-Wolf": (256, None),
        "all dims + Ledoit-Wolf": (everything, None),
        "all dims + diagonal": (everything, diagonal),
    }
    shrink = propagation._ledoit_wolf
    for separation in (0.7, 1.0):
        print(f"{n} x {dim}, separation {separation}: filled-label accuracy (mean, min of {seeds} seeds), seconds")
        results = {name: [] for name in ["majority class", *variants]}
        for seed in range(seeds):
            x, truth, labels, kernel = study_data(n, dim, separation, seed)
            hidden = labels == -1
            majority = np.bincount(labels[~hidden]).argmax()
            results["majority class"].append((np.mean(truth[hidden] == majority), 0.0, 0.0))
            for name, (pca_dim, covariance) in variants.items():
                propagation._ledoit_wolf = covariance or shrink
                try:
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    rounds = 0 if name.startswith("kNN") else 30
                    result = propagate_labels(x, {"a": labels}, {"a": kernel}, rounds=rounds, pca_dim=pca_dim)
                finally:
                    propagation._ledoit_wolf = shrink
                accuracy = np.mean(result.labels["a"][hidden] == truth[hidden])
                results[name].append((accuracy, time.perf_counter() - start_wall, time.process_time() - start_cpu))
        for name, runs in results.items():
            runs = np.array(runs)
            print(
                f"  {name:24s} {runs[:, 0].mean():.3f} (min {runs[:, 0].min():.3f})  "
                f"{runs[:, 1].mean():7.2f} s wall {runs[:, 2].mean():7.2f} s CPU"
            )


def blocked_product(x):
    """`x @ x.T` block by block, in the block sizes of `nearest_neighbors`, nothing kept."""
    cells = max(_BLOCK_BYTES // x.itemsize, 1)
    b_step = min(len(x), max(int(np.sqrt(cells)), 1))
    q_step = max(cells // b_step, 1)
    out = np.empty((q_step, b_step), x.dtype)
    for b0 in range(0, len(x), b_step):
        base = x[b0 : b0 + b_step]
        for q0 in range(0, len(x), q_step):
            query = x[q0 : q0 + q_step]
            np.matmul(query, base.T, out=out[: len(query), : len(base)])


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _worker(args):
    x, truth, labels, kernels = make_data(args.n, args.dim)
    out = {"rss_data_mib": _peak_rss_mib()}
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if args.worker == "product":
        blocked_product(x)
    elif args.worker == "knn":
        nearest_neighbors(x, 10)
    else:
        result = propagate_labels(x, labels, kernels)
    out["seconds"] = time.perf_counter() - start_wall
    out["cpu_seconds"] = time.process_time() - start_cpu
    out["peak_rss_mib"] = _peak_rss_mib()
    if args.worker == "propagate":  # not timed: what the rounds add to the kNN start
        start = propagate_labels(x, labels, kernels, rounds=0)
        out["rounds"] = {t: len(c) for t, c in result.posterior_change.items()}
        out["accuracy"], out["knn_accuracy"] = {}, {}
        for task, y in truth.items():
            hidden = labels[task] == -1 if y.ndim == 1 else labels[task][:, 0] == -1
            out["accuracy"][task] = float(np.mean(result.labels[task][hidden] == y[hidden]))
            out["knn_accuracy"][task] = float(np.mean(start.labels[task][hidden] == y[hidden]))
    print(json.dumps(out))


def _run(worker, args):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
    ]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="rows (images)")
    parser.add_argument("--dim", type=int, default=256, help="feature size")
    parser.add_argument("--covariance-study", action="store_true", help="compare covariance conditionings")
    parser.add_argument("--seeds", type=int, default=2, help="problems per setting of the covariance study")
    parser.add_argument("--worker", choices=["product", "knn", "propagate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.covariance_study:
        covariance_study(args.n, args.dim, args.seeds)
        return

    print(
        f"{args.n} x {args.dim} float32 features ({4 * args.n * args.dim / 2**20:.0f} MiB); {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (other processes slow every figure alike)"
    )
    product = _run("product", args)
    print(f"baseline, blocked X @ X.T: {_times(product)}  peak RSS {product['peak_rss_mib']:.0f} MiB")
    knn = _run("knn", args)
    print(
        f"nearest_neighbors(k=10):   {_times(knn)}  = {knn['seconds'] / product['seconds']:.2f} x baseline "
        f"({knn['cpu_seconds'] / product['cpu_seconds']:.2f} x in CPU time)  peak RSS {knn['peak_rss_mib']:.0f} MiB "
        f"(data alone {knn['rss_data_mib']:.0f} MiB)"
    )
    full = _run("propagate", args)
    print(
        f"propagate_labels:          {_times(full)}  = {full['seconds'] / product['seconds']:.2f} x baseline "
        f"({full['cpu_seconds'] / product['cpu_seconds']:.2f} x in CPU time)  peak RSS {full['peak_rss_mib']:.0f} MiB"
    )
    print(
        "  rounds: "
        + ", ".join(f"{t} {r}" for t, r in full["rounds"].items())
        + "; filled-label accuracy (kNN start): "
        + ", ".join(f"{t} {a:.3f} ({full['knn_accuracy'][t]:.3f})" for t, a in full["accuracy"].items())
    )


def _times(out):
    return f"{out['seconds']:7.2f} s wall, {out['cpu_seconds']:7.2f} s CPU"


if __name__ == "__main__":
    main()
