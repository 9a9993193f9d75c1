"""One training process for `tests/test_distribute_multi_worker.py`.

    python tests/helpers/mw_driver.py [--kill-at-step S --kill-worker W] [--backup-every N] \
        RUN_PY_ARGS...

RUN_PY_ARGS are those of `experiments/run.py` (`smoke --data CSV --epochs 2 --run-dir DIR
--set ...`); the config is built exactly as run.py builds it, and trained with
`portrait_keras.training.fit.train(config, run_dir=..., strategy="auto", backup_every=N,
verbose=0, report=False)`. Under TF_CONFIG this process is one worker of the cluster it names.

`--kill-at-step S --kill-worker W`: worker W (0 without TF_CONFIG) SIGKILLs itself at the end
of its global train step S (after the step's backup, if any), counted across epochs from the
first step this process runs. The final metrics are printed on stdout as `METRICS {json}`.
"""

import argparse
import json
import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-worker", type=int, default=0)
    parser.add_argument("--backup-every", type=int, default=2)
    ours, rest = parser.parse_known_args(argv)

    from portrait_keras.commands import train as run

    args = run.parse_args(rest)
    config = run.build_config(args)

    import keras

    from portrait_keras.training import distribute
    from portrait_keras.training.fit import train

    callbacks = []
    if ours.kill_at_step is not None and distribute.worker_index() == ours.kill_worker:

        class KillAt(keras.callbacks.Callback):
            step = 0

            def on_train_batch_end(self, batch, logs=None):
                KillAt.step += 1
                if KillAt.step == ours.kill_at_step:
                    worker = distribute.worker_index()
                    line = f"KILLING worker {worker} at step {KillAt.step} (time {time.time():.3f})"
                    print(line, file=sys.stderr, flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillAt())

    metrics = train(
        config,
        run_dir=args.run_dir,
        strategy=args.strategy,
        replicas=args.replicas,
        callbacks=callbacks,
        backup_every=ours.backup_every,
        verbose=0,
        report=False,
    )
    print("METRICS " + json.dumps({k: float(v) for k, v in metrics.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
