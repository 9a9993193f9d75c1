"""The commands of `portrait-keras` (see `portrait_keras.cli`): one module per command, each
with `main(argv) -> exit status`. Importing a command module loads no TensorFlow; a bad input
prints one `error: ...` line and returns 2.
"""
