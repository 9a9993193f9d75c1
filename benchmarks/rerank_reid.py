"""Speed and memory of k-reciprocal re-ranking, `evaluate_reid(rerank=True)`, at Portrait250K size.

Goal (issue #19): 12,361 queries x 86,006 gallery images, d=512, re-ranked (k1=20, k2=6,
lambda=0.3) in at most 4 GB peak RSS and at most 10x the time of the plain evaluation
measured in the same run. Prints, each measured in its own subprocess (so every peak RSS
is clean):

- the plain `evaluate_reid` (Macro): time and peak RSS;
- `evaluate_reid(rerank=True)`: time, of which the neighbour search and k-reciprocal
  features (`KReciprocal(...)`), its ratio to the plain time (wall and CPU), peak RSS;
- with `--check` (on in `--quick`): `evaluate_reid_reference(rerank=True)`, the dense
  `rerank_dense` on the (Q+G)^2 matrix, and the largest difference of the two results.

The data are `eval_reid.make_data`'s synthetic Portrait250K look-alike (long-tailed ids, two
thirds unknown gallery images, near-duplicate groups).

    python benchmarks/rerank_reid.py                        # full size (minutes)
    python benchmarks/rerank_reid.py --queries 2000 --gallery 14000   # an intermediate size
    python benchmarks/rerank_reid.py --quick                # CI size, with the dense check
"""

import argparse
import json
import os
import subprocess
import sys
import time

from eval_reid import _peak_rss_mib, _times, make_data

from portrait_keras.metrics import reid
from portrait_keras.metrics.reid import evaluate_reid, evaluate_reid_reference

GOAL_RSS_GB = 4.0
GOAL_RATIO = 10.0


def _worker(args):
    data = make_data(args.queries, args.gallery, args.dim)
    out = {"rss_data_mib": _peak_rss_mib()}
    setup = []

    class TimedKReciprocal(reid.KReciprocal):
        def __init__(self, *a, **k):
            start = time.perf_counter()
            super().__init__(*a, **k)
            setup.append(time.perf_counter() - start)

    reid.KReciprocal = TimedKReciprocal  # evaluate_reid builds its KReciprocal through the module
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if args.worker == "plain":
        out["result"] = evaluate_reid(**data)
    elif args.worker == "rerank":
        out["result"] = evaluate_reid(**data, rerank=True)
    else:
        out["result"] = evaluate_reid_reference(**data, rerank=True)
    out["seconds"] = time.perf_counter() - start_wall
    out["cpu_seconds"] = time.process_time() - start_cpu
    out["setup_seconds"] = sum(setup)
    out["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(out))


def _run(worker, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker]
    command += ["--queries", str(args.queries), "--gallery", str(args.gallery), "--dim", str(args.dim)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=12361)
    parser.add_argument("--gallery", type=int, default=86006)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1, help="alternating plain / re-ranked runs; the fastest counts")
    parser.add_argument("--check", action="store_true", help="compare with the dense reference (small sizes only)")
    parser.add_argument("--quick", action="store_true", help="300 queries x 2,000 gallery, d=128, with --check")
    parser.add_argument("--worker", choices=["plain", "rerank", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.gallery, args.dim, args.check = 300, 2000, 128, True
    if args.worker:
        _worker(args)
        return

    print(
        f"{args.queries} queries x {args.gallery} gallery, d={args.dim}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (other processes slow every figure alike)"
    )
    plains, reranks = [], []
    for _ in range(args.repeat):
        plains.append(_run("plain", args))
        reranks.append(_run("rerank", args))
    plain = min(plains, key=lambda out: out["seconds"])
    rerank = min(reranks, key=lambda out: out["seconds"])
    print(
        f"Macro mAP {plain['result']['mAP']:.3f} -> {rerank['result']['mAP']:.3f} re-ranked, "
        f"Macro rank-1 {plain['result']['rank1']:.3f} -> {rerank['result']['rank1']:.3f}"
    )
    print(f"fastest of {args.repeat} alternating runs each:")
    print(f"evaluate_reid:               {_times(plain)}  peak RSS {plain['peak_rss_mib']:6.0f} MiB")
    ratio, cpu_ratio = rerank["seconds"] / plain["seconds"], rerank["cpu_seconds"] / plain["cpu_seconds"]
    print(
        f"evaluate_reid(rerank=True):  {_times(rerank)}  peak RSS {rerank['peak_rss_mib']:6.0f} MiB "
        f"(data alone {rerank['rss_data_mib']:.0f} MiB)"
    )
    print(f"  of which KReciprocal (neighbours, features): {rerank['setup_seconds']:.2f} s wall")
    print(
        f"re-ranked / plain: {ratio:.2f} x wall, {cpu_ratio:.2f} x CPU (goal <= {GOAL_RATIO:.0f}); "
        f"peak RSS {rerank['peak_rss_mib'] * 2**20 / 1e9:.2f} GB (goal <= {GOAL_RSS_GB:.0f} GB)"
    )
    if args.check:
        dense = _run("dense", args)
        diff = max(abs(dense["result"][k] - rerank["result"][k]) for k in dense["result"])
        print(
            f"evaluate_reid_reference(rerank=True), dense: {_times(dense)}  peak RSS "
            f"{dense['peak_rss_mib']:.0f} MiB; results differ by {diff:.1e}"
        )


if __name__ == "__main__":
    main()
