"""Training: the Keras trainer (losses of eqs. 4–6), `train()` and its run folder, callbacks,
the paper's learning-rate schedule and tf.distribute support.

    trainer.py     PortraitTrainer: compute_loss over the task outputs (keras.ops)
    fit.py         train(config, run_dir): data → compile → fit → evaluate → export
    run_dir.py     RunDir: every file name of a run folder
    tasks.py       trained_tasks: the tasks the data labels (a task without labels is left out)
    callbacks.py   PIQCallback, UncertaintyLogger, BackupAndResume, NaNGuard, ...
    schedules.py   WarmupMultiStep (10-epoch warm-up, x0.1 at 30/60/90)
    distribute.py  strategies, gathered losses, synchronized BatchNorm, multi-worker fixes
    toy_clip.py    train_toy_clip: tiny CLIP towers on SynthPortrait images and captions

Submodules import Keras, so nothing is imported here until used.
"""

_LAZY = {
    "train": "fit",
    "build_trainer": "fit",
    "TrainingDiverged": "fit",
    "PortraitTrainer": "trainer",
    "PIQCallback": "callbacks",
    "WarmupMultiStep": "schedules",
    "RunDir": "run_dir",
    "trained_tasks": "tasks",
    "train_toy_clip": "toy_clip",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
