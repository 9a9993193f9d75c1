"""Speed and memory of `evaluate_reid` at Portrait250K size (12,361 queries x 86,006 gallery, d=512).

Prints, each measured in its own subprocess (so every peak RSS is clean):

- the floor: the chunked float32 query-gallery product alone, same chunking;
- `evaluate_reid` (Macro) on the full data: time, ratio to the floor, peak RSS;
- on a subset of queries: the straightforward method (full distance matrix and a full
  argsort per query, as torchreid's Python `eval_market1501` does, plus the group
  exclusion) against `evaluate_reid(macro=False)`, their time ratio and the largest
  difference of their results.

The data are synthetic but shaped like Portrait250K: long-tailed ids (404 query ids
inside 426 gallery ids, weights ~ rank^-0.8), two thirds of the gallery unknown (-1,
drawn from 5,000 distractor identities that look like known ones), identities with
several appearance modes, and near-duplicate groups joining a quarter of the queries to
1-3 gallery images.

With `--baseline-src DIR` the `evaluate_reid` of another source tree of the package (e.g. a
`git worktree` of an earlier commit) is timed too, alternating with this one: a before/after
of one run, under the same load.

    python benchmarks/eval_reid.py                       # full size
    python benchmarks/eval_reid.py --queries 2000 --gallery 10000 --subset 300 --repeat 1   # CI size
    git worktree add /tmp/before COMMIT && python benchmarks/eval_reid.py --baseline-src /tmp/before
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from portrait_keras.metrics.reid import _BLOCK_BYTES, evaluate_reid


def make_data(num_query, num_gallery, dim=512, seed=0, noise=2.0, mode_spread=0.5, lookalike=0.3, num_modes=4):
    """Synthetic re-id features and labels (see the module docstring): per dimension, an
    identity centre N(0, 1), plus one of `num_modes` appearance modes N(0, mode_spread^2),
    plus noise N(0, noise^2); distractor centres are a known centre plus
    N(0, lookalike^2). The defaults give Macro mAP ~0.36 and Macro rank-1 ~0.62 at
    Portrait250K size, near the paper's baselines (Table 4: 0.31-0.42 and 0.51-0.60)."""
    rng = np.random.default_rng(seed)
    num_gallery_ids, num_query_ids, num_distractors = 426, 404, 5000
    weights = np.arange(1, num_gallery_ids + 1) ** -0.8
    num_known = max(num_gallery - round(0.663 * num_gallery), num_gallery_ids)
    gallery_ids = np.concatenate(
        [
            np.arange(num_gallery_ids),
            rng.choice(num_gallery_ids, num_known - num_gallery_ids, p=weights / weights.sum()),
            -np.ones(num_gallery - num_known, np.int64),
        ]
    )
    rng.shuffle(gallery_ids)
    query_weights = weights[:num_query_ids] / weights[:num_query_ids].sum()
    query_ids = np.concatenate(
        [
            np.arange(min(num_query_ids, num_query)),
            rng.choice(num_query_ids, max(num_query - num_query_ids, 0), p=query_weights),
        ]
    )
    rng.shuffle(query_ids)

    centres = rng.standard_normal((num_gallery_ids + num_distractors, dim), dtype=np.float32)
    # Distractors look like a known identity (hard negatives), at `lookalike` from its centre.
    model = rng.integers(0, num_gallery_ids, num_distractors)
    centres[num_gallery_ids:] = centres[model] + lookalike * rng.standard_normal(
        (num_distractors, dim), dtype=np.float32
    )
    modes = centres[:, None] + mode_spread * rng.standard_normal((len(centres), num_modes, dim), dtype=np.float32)
    gallery_source = np.where(gallery_ids >= 0, gallery_ids, rng.integers(num_gallery_ids, len(centres), num_gallery))

    def features(source):
        out = np.empty((len(source), dim), np.float32)
        for start in range(0, len(source), 4096):  # in pieces: keeps the generator's peak memory low
            part = source[start : start + 4096]
            out[start : start + 4096] = modes[part, rng.integers(0, num_modes, len(part))]
            out[start : start + 4096] += noise * rng.standard_normal((len(part), dim), dtype=np.float32)
        return out

    gallery = features(gallery_source)
    query = features(query_ids)

    query_groups = -np.ones(num_query, np.int64)
    gallery_groups = -np.ones(num_gallery, np.int64)
    by_id = {i: list(rng.permutation(np.flatnonzero(gallery_ids == i))) for i in np.unique(query_ids)}
    unknown = list(rng.permutation(np.flatnonzero(gallery_ids == -1)))
    for group, q in enumerate(rng.choice(num_query, num_query // 4, replace=False)):
        members = [by_id[query_ids[q]].pop() for _ in range(rng.integers(1, 4)) if by_id[query_ids[q]]]
        if rng.random() < 0.1 and unknown:
            members.append(unknown.pop())
        query_groups[q] = group
        gallery_groups[members] = group
        gallery[members] = query[q] + 0.3 * rng.standard_normal((len(members), dim), dtype=np.float32)
    return dict(
        query_features=query,
        gallery_features=gallery,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
        query_groups=query_groups,
        gallery_groups=gallery_groups,
    )


def straightforward(
    query_features, gallery_features, query_ids, gallery_ids, query_groups, gallery_groups, max_rank=10, literal=False
):
    """Per-query mAP and CMC the plain way: whole distance matrix, whole argsort, then per
    query a mask over the whole ranked gallery (torchreid's Python `eval_market1501`, with
    the group exclusion and unknown gallery ids). `literal` keeps torchreid's Python list
    comprehension for the precision curve; otherwise it is a numpy division."""
    q = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
    g = gallery_features / np.linalg.norm(gallery_features, axis=1, keepdims=True)
    distmat = 1 - q @ g.T
    indices = np.argsort(distmat, axis=1)
    aps, cmcs = [], []
    for i in range(len(q)):
        order = indices[i]
        keep = ~((query_groups[i] != -1) & (gallery_groups[order] == query_groups[i]))
        raw_cmc = ((gallery_ids[order][keep] == query_ids[i]) & (query_ids[i] != -1)).astype(np.int32)
        if not raw_cmc.any():
            continue
        cmc = raw_cmc.cumsum()
        cmcs.append(np.minimum(cmc[:max_rank], 1))
        if literal:
            precision = np.asarray([x / (k + 1.0) for k, x in enumerate(cmc)])
        else:
            precision = cmc / np.arange(1, len(cmc) + 1)
        aps.append((precision * raw_cmc).sum() / raw_cmc.sum())
    cmc = np.mean(cmcs, 0)
    return {"mAP": float(np.mean(aps)), **{f"rank{k + 1}": float(c) for k, c in enumerate(cmc)}}


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _worker(args):
    data = make_data(args.queries, args.gallery, args.dim)
    rss_data = _peak_rss_mib()
    out = {"rss_data_mib": rss_data}
    if args.worker.startswith("subset"):
        subset = np.random.default_rng(1).choice(args.queries, min(args.subset, args.queries), replace=False)
        for key in ("query_features", "query_ids", "query_groups"):
            data[key] = data[key][subset]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if args.worker.endswith("floor"):
        q = data["query_features"] / np.linalg.norm(data["query_features"], axis=1, keepdims=True)
        g = data["gallery_features"] / np.linalg.norm(data["gallery_features"], axis=1, keepdims=True)
        chunk = max(1, _BLOCK_BYTES // (4 * len(g)))
        block = np.empty((chunk, len(g)), np.float32)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(q), chunk):
            part = q[start : start + chunk]
            np.matmul(part, g.T, out=block[: len(part)])
    elif args.worker == "full":
        out["result"] = evaluate_reid(**data)
    elif args.worker == "subset_ours":
        out["result"] = evaluate_reid(**data, macro=False)
    else:
        out["result"] = straightforward(**data, literal=args.worker == "subset_torchreid")
    out["seconds"] = time.perf_counter() - start_wall
    out["cpu_seconds"] = time.process_time() - start_cpu
    out["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(out))


def _run(worker, args, source=None):
    """`worker`'s JSON, run in a subprocess; `source`: a source tree of the package to import instead."""
    env = None
    if source is not None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [source, os.environ.get("PYTHONPATH")] if p))
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--queries",
        str(args.queries),
        "--gallery",
        str(args.gallery),
        "--dim",
        str(args.dim),
        "--subset",
        str(args.subset),
    ]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=12361)
    parser.add_argument("--gallery", type=int, default=86006)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--subset", type=int, default=1000, help="queries for the straightforward comparison")
    parser.add_argument("--repeat", type=int, default=2, help="alternating floor / full runs; the fastest counts")
    parser.add_argument(
        "--baseline-src", metavar="DIR", help="also time the evaluate_reid of this source tree of the package"
    )
    parser.add_argument(
        "--worker",
        choices=["floor", "full", "subset_floor", "subset_ours", "subset_numpy", "subset_torchreid"],
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return

    print(
        f"{args.queries} queries x {args.gallery} gallery, d={args.dim}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (other processes slow every figure alike)"
    )
    # Alternate the two and keep each one's fastest run: other processes come and go.
    floors, fulls, baselines = [], [], []
    for _ in range(args.repeat):
        floors.append(_run("floor", args))
        fulls.append(_run("full", args))
        if args.baseline_src:
            baselines.append(_run("full", args, args.baseline_src))
    floor = min(floors, key=lambda out: out["seconds"])
    full = min(fulls, key=lambda out: out["seconds"])
    result = full["result"]
    print(
        f"data: {result['num_queries']} valid queries, {result['num_ids']} query ids; "
        f"Macro mAP {result['mAP']:.3f}, Macro rank-1 {result['rank1']:.3f}"
    )
    print(f"fastest of {args.repeat} alternating runs each:")
    print(f"floor (chunked matmul only): {_times(floor)}")
    print(
        f"evaluate_reid (full, macro): {_times(full)}  = {full['seconds'] / floor['seconds']:.2f} x floor "
        f"({full['cpu_seconds'] / floor['cpu_seconds']:.2f} x in CPU time)"
    )
    if baselines:
        base = min(baselines, key=lambda out: out["seconds"])
        print(
            f"baseline evaluate_reid ({args.baseline_src}): {_times(base)}  = "
            f"{base['seconds'] / floor['seconds']:.2f} x floor ({base['cpu_seconds'] / floor['cpu_seconds']:.2f} x "
            f"in CPU time), peak RSS {base['peak_rss_mib']:.0f} MiB; results differ by "
            f"{max(abs(base['result'][k] - result[k]) for k in result):.1e}"
        )
    print(
        f"peak RSS: evaluate_reid process {full['peak_rss_mib']:.0f} MiB "
        f"(data alone {full['rss_data_mib']:.0f} MiB); floor process {floor['peak_rss_mib']:.0f} MiB"
    )
    subset_floor = _run("subset_floor", args)
    ours = _run("subset_ours", args)
    print(
        f"subset of {min(args.subset, args.queries)} queries (per-query averages); 'beyond' = time minus "
        f"the subset's matmul ({subset_floor['seconds']:.2f} s):"
    )
    print(f"  evaluate_reid:             {_times(ours)}  peak RSS {ours['peak_rss_mib']:.0f} MiB")
    beyond = ours["seconds"] - subset_floor["seconds"]
    for worker, name in (("subset_numpy", "straightforward, numpy"), ("subset_torchreid", "torchreid eval_market1501")):
        plain = _run(worker, args)
        diff = max(abs(plain["result"][k] - ours["result"][k]) for k in plain["result"])
        print(
            f"  {name + ':':27s}{_times(plain)}  peak RSS {plain['peak_rss_mib']:.0f} MiB; evaluate_reid "
            f"{plain['seconds'] / ours['seconds']:.1f} x faster "
            f"({(plain['seconds'] - subset_floor['seconds']) / beyond:.1f} x "
            f"beyond the matmul); results differ by {diff:.1e}"
        )


def _times(out):
    return f"{out['seconds']:6.2f} s wall, {out['cpu_seconds']:6.2f} s CPU"


if __name__ == "__main__":
    main()
