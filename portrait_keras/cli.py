"""`portrait-keras COMMAND ...` (also `python -m portrait_keras COMMAND ...`): the one command line.

Each command is a module with `main(argv)`; `portrait-keras COMMAND --help` shows its options and
examples. Nothing here imports TensorFlow, so `--help` is instant; when a command does, its C++
log lines below `TF_CPP_MIN_LOG_LEVEL` (default "2": errors only) are left out
(`commands._quiet.quiet_tensorflow`).
"""

import importlib
import sys

# name → (module, one-line summary), in the order of the data flow.
COMMANDS = {
    "synth": ("portrait_keras.data.synthportrait.dataset", "generate a SynthPortrait dataset"),
    "import": ("portrait_keras.data.prep.import_dataset", "Market-1501 / DukeMTMC-reID folder -> annotation CSV"),
    "phash": ("portrait_keras.data.prep.phash", "perceptual hashes of a table's images (cached)"),
    "dedup": ("portrait_keras.data.prep.dedup", "near-duplicate groups (the `group` column) by perceptual hash"),
    "validate": ("portrait_keras.data.prep.validate", "check a whole annotation table and decode every image"),
    "stats": ("portrait_keras.data.prep.stats", "label counts and LTS_k per split (paper Table 3)"),
    "train": ("portrait_keras.commands.train", "train a named experiment (Table 4/5 rows) into a run folder"),
    "evaluate": ("portrait_keras.commands.evaluate", "metrics of a run: Macro and micro mAP/CMC, mINP, F1, PAR, PIQ"),
    "baseline": ("portrait_keras.evaluation.baselines", "pixel / majority baseline of a dataset"),
    "report": ("portrait_keras.commands.report", "figures, report.md and report.html of a run"),
    "interpret": ("portrait_keras.commands.interpret", "describe images by appearance, posture and emotion"),
    "search": ("portrait_keras.commands.search", "gallery images by a query image (re-id), --where or --text"),
    "embed": ("portrait_keras.commands.embed", "embeddings and probabilities of a CSV or image folder -> .npz"),
    "convert-hrnet": ("portrait_keras.models.convert_hrnet", "timm hrnet_w32 weights -> backbone_weights file"),
    "convert-clip": ("portrait_keras.commands.convert_clip", "open_clip / OpenAI CLIP weights -> .weights.h5"),
}

USAGE = """usage: portrait-keras COMMAND [ARGS...]

Portrait Interpretation (Portrait250K): re-id, appearance, posture and emotion in one Keras model.

commands:
{commands}

examples:
  portrait-keras train smoke                 # a 2-minute run on the embedded SynthPortrait
  portrait-keras evaluate runs/smoke
  portrait-keras interpret runs/smoke/model.keras photo.jpg
  portrait-keras train --help                # every command has --help with examples
"""


def usage():
    width = max(len(name) for name in COMMANDS)
    return USAGE.format(commands="\n".join(f"  {n:<{width}}  {s}" for n, (_, s) in COMMANDS.items()))


def main(argv=None):
    """Runs `portrait-keras` with `argv` (default `sys.argv[1:]`); returns the exit status."""
    program = argv is None  # the console script: this call is the whole process
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from portrait_keras import __version__

        print(f"portrait-keras {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        print(f"error: unknown command {argv[0]!r}.{hint} Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from portrait_keras.commands import _quiet

    _quiet.quiet_tensorflow()
    _quiet.plain_warnings()
    module = importlib.import_module(COMMANDS[argv[0]][0])
    if argv[0] == "train":
        return module.main(argv[1:], program=program)
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
