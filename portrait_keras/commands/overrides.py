"""`--set part.field=value` on the command line: a string turned into the config field's type.

Used by `portrait-keras train` (and `experiments/run.py`); the configs themselves
(`portrait_keras.config`) hold no parsing.
"""

import dataclasses
import json
import typing
from typing import Literal, Union

from portrait_keras.config import describe_type, literal_choices, unknown_choice_message


def override(config, key, value):
    """Returns `config` with the dotted field `key` (e.g. `"train.epochs"`) set to `value`.

    A string `value` (from `--set key=value`) is converted to the field's declared type:
    bool takes `true`/`false`/`yes`/`no`/`1`/`0` (any case); int and float what `int()` and
    `float()` take; a tuple field a JSON list (`[30, 60]`, `[id, arm]`) or one bare value (a
    one-element tuple); an `Optional` field `null` or `none` for None; `jit_compile` also
    `auto`. Fields of other types (`backbone_kwargs`) read JSON, else keep the string.
    Other values are set as they are (lists become tuples).

    Raises:
        ValueError: unknown key, or a string that does not convert, e.g.
            "--set train.lr: expected a float. Received: 'abc'".
    """
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in ("data", "model", "loss", "train"):
        raise ValueError(
            f"Override keys look like 'part.field' with part in data, model, loss, train. Received: {key!r}"
        )
    section = getattr(config, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise ValueError(f"Unknown field {key!r}. Allowed: {', '.join(parts[0] + '.' + f for f in fields)}")
    if isinstance(value, str):
        kind = typing.get_type_hints(type(section))[parts[1]]
        try:
            value = _from_string(value, kind)
        except ValueError:
            choices = literal_choices(kind)
            if choices and typing.get_origin(kind) is Literal:
                raise ValueError(unknown_choice_message(f"--set {key}", value, choices)) from None
            raise ValueError(f"--set {key}: expected {describe_type(kind)}. Received: {value!r}") from None
    if isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(config, **{parts[0]: dataclasses.replace(section, **{parts[1]: value})})


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _from_string(text, kind):
    """`text` converted to the type annotation `kind`; ValueError if it does not fit."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise ValueError(text)
    if kind is int or kind is float:
        return kind(text)
    if kind is str:
        return text
    if origin is Literal:
        for allowed in args:
            if text.strip().lower() == str(allowed).lower():
                return allowed
        raise ValueError(text)
    if origin is Union and type(None) in args:
        if text.strip().lower() in ("null", "none"):
            return None
        rest = tuple(a for a in args if a is not type(None))
        return _from_string(text, rest[0] if len(rest) == 1 else Union[rest])
    if origin is Union and all(_is_simple(a) for a in args):
        for a in args:
            try:
                return _from_string(text, a)
            except ValueError:
                pass
        raise ValueError(text)
    if kind is tuple or origin is tuple:
        return _tuple_from_string(text, args)
    try:  # dict, object and other unions: JSON when it parses, else the string
        value = json.loads(text)
    except ValueError:
        return text
    return tuple(value) if isinstance(value, list) else value


def _tuple_from_string(text, args):
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            items = json.loads(stripped)
        except ValueError:  # [id, arm]: unquoted words
            inner = stripped[1:-1].strip()
            items = [w.strip().strip("'\"") for w in inner.split(",")] if inner else []
    else:
        items = [text]
    if not args:
        return tuple(items)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(items)
    if len(args) != len(items):
        raise ValueError(text)
    out = []
    for item, kind in zip(items, args):
        if isinstance(item, (list, dict)) or item is None:
            raise ValueError(text)
        out.append(_from_string(item if isinstance(item, str) else json.dumps(item), kind))
    return tuple(out)


def _is_simple(kind):
    return kind in (bool, int, float, str) or typing.get_origin(kind) is Literal
