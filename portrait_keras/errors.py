"""Errors every phase shares."""


class InputError(ValueError):
    """A user input (model path, image file, gallery) that cannot be used; the message names it."""
