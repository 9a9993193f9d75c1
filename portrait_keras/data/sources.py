"""Several datasets trained as one: the union of their tasks (paper 004 §4.3, heterogeneous sources).

Paper 004 trains one model on datasets annotated with different attribute sets (AFLW, CelebA,
ExpW); Portrait250K users do the same with a Market-1501 import beside their own table.
`read_sources` reads each annotation CSV as `read_annotations` does (its own `schema.json`, or
its task columns) and joins them into one `Annotations`:

- the tasks are the union of the datasets' tasks, in the default schema's order, then in the
  order the files name them. A task named in several datasets must have the same kind and
  aspect there; its class list is the union (the first dataset's order, then the classes
  the others add), and a dataset without the task has it unknown on every row;
- every row keeps its split: a dataset's query and gallery are tested as they are;
- identities are kept apart per dataset: id 7 of `A` and id 7 of `B` are two people, so each
  (dataset, id) pair gets a new integer, as do near-duplicate groups and cameras;
- `Annotations.sources` lists `(name, annotations)` per dataset, each read with the joint
  class lists, so the model trained on the union is evaluated on each dataset alone.
"""

import os

import numpy as np
import pandas as pd

from portrait_keras import schema as schema_lib
from portrait_keras.config import dataset_name
from portrait_keras.data.annotations import UNKNOWN, Annotations, read_annotations

_NAMESPACED = ("group", "camera")  # integer columns whose values mean something within one dataset only


def source_names(csv_paths):
    """A distinct short name per dataset (`config.dataset_name`), `-2`, `-3`… added to repeats.

    >>> source_names(["/d/market/annotations.csv", "/d/duke/duke.csv", "/e/market/annotations.csv"])
    ['market', 'duke-duke', 'market-2']
    """
    names = []
    for path in csv_paths:
        name = base = dataset_name(path)
        n = 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def union_schema(schemas, where):
    """The union of `schemas`' tasks (module docstring).

    Args:
        schemas: sequence of `Schema`.
        where: sequence of str. Names each schema's file in the messages.

    Raises:
        SchemaError: a task with another kind or aspect in two datasets, or two identity
            tasks of different names (re-id is one task however the datasets call it).
    """
    order = list(schema_lib.default_schema().names)
    tasks, first_seen = {}, {}
    for schema, source in zip(schemas, where):
        for task in schema.tasks:
            known = tasks.get(task.name)
            if known is None:
                tasks[task.name], first_seen[task.name] = task, source
                continue
            if (known.kind, known.aspect) != (task.kind, task.aspect):
                raise schema_lib.SchemaError(
                    f"task {task.name!r} is {known.kind}/{known.aspect} in {first_seen[task.name]} but "
                    f"{task.kind}/{task.aspect} in {source}; datasets trained together must agree on it"
                )
            added = tuple(c for c in task.classes if c not in known.classes)
            if added:
                tasks[task.name] = schema_lib.Task(known.name, known.aspect, known.kind, known.classes + added)
    identities = [t for t in tasks.values() if t.kind == schema_lib.IDENTITY]
    if len(identities) > 1:
        names = ", ".join(repr(t.name) for t in identities)
        raise schema_lib.SchemaError(
            f"the datasets name their identity task differently ({names}); rename the column to one "
            f"name (and its task in schema.json) so re-id is one task"
        )
    ranked = sorted(tasks, key=lambda n: (order.index(n) if n in order else len(order), list(tasks).index(n)))
    return schema_lib.Schema(tuple(tasks[n] for n in ranked))


def read_sources(csv_paths):
    """Reads one or several annotation CSVs as one `Annotations` (module docstring).

    Args:
        csv_paths: sequence of path-like. One path gives exactly `read_annotations(path)`.

    Returns:
        `Annotations` whose `sources` attribute is a list of `(name, Annotations)`, one per
        dataset (`source_names`), and whose `csv_path` joins the paths with `" + "`.

    Raises:
        AnnotationError / SchemaError: as `read_annotations`, naming the dataset's file;
            SchemaError also for datasets whose tasks cannot be joined (`union_schema`).
        ValueError: the same file given twice.
    """
    paths = [os.path.abspath(os.fspath(p)) for p in csv_paths]
    if not paths:
        raise ValueError("read_sources needs at least one annotation CSV")
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise ValueError(f"--data {repeated[0]} is given twice; each dataset once")
    own = [read_annotations(p) for p in paths]
    names = source_names(paths)
    if len(own) == 1:
        own[0].sources = [(names[0], own[0])]
        return own[0]
    schema = union_schema([a.schema for a in own], paths)
    parts = []
    for path, ann in zip(paths, own):
        joint = schema.subset(ann.schema.names)
        # Read again with the joint class lists, so its labels index the model's classes.
        parts.append(ann if joint == ann.schema else read_annotations(path, schema=joint))
    combined = _join(parts, names, schema, " + ".join(paths))
    combined.sources = list(zip(names, parts))
    return combined


def _join(parts, names, schema, csv_path):
    tables, encoded = [], {}
    for name, ann in zip(names, parts):
        tables.append(ann.table.assign(dataset=name))  # `source` is a column of its own
    table = pd.concat(tables)  # the index keeps each row's line in its own file
    table.index.name = "line"
    n = [len(a) for a in parts]
    encoded["path"] = np.concatenate([a._encoded["path"] for a in parts])
    encoded["mask"] = np.concatenate([a._encoded["mask"] for a in parts])
    encoded["frame"] = np.concatenate([a._encoded["frame"] for a in parts])
    for column in _NAMESPACED:
        encoded[column] = _namespaced([a._encoded[column] for a in parts])
    for task in schema.tasks:
        columns = []
        for ann, rows in zip(parts, n):
            if task.name in ann.schema.names:
                columns.append(ann._encoded[task.name])
            elif task.kind == schema_lib.MULTI:
                columns.append(np.full([rows, task.num_classes], UNKNOWN, np.float32))
            else:
                dtype = np.int64 if task.kind == schema_lib.IDENTITY else np.int32
                columns.append(np.full([rows], UNKNOWN, dtype))
        encoded[task.name] = (
            _namespaced(columns) if task.kind == schema_lib.IDENTITY else np.concatenate(columns, axis=0)
        )
    root = os.path.commonpath([a.root for a in parts])
    return Annotations(schema, root, csv_path, table, encoded, schema_source="sources")


def _namespaced(columns):
    """One integer column from one per dataset, equal values of two datasets made distinct
    (each (dataset, value) pair a new value, in first-seen order); `-1` stays unknown."""
    out = []
    next_value = 0
    for values in columns:
        values = np.asarray(values, np.int64)
        known = values != UNKNOWN
        unique, inverse = np.unique(values[known], return_inverse=True)
        mapped = np.full(values.shape, UNKNOWN, np.int64)
        mapped[known] = next_value + inverse
        next_value += unique.size
        out.append(mapped)
    return np.concatenate(out)


def portable_table(annotations):
    """`annotations.table` as a CSV under `annotations.root` can hold it: for joined datasets the
    paths (and masks) made relative to the common root, and the namespaced ids, groups and
    cameras written out, so `read_annotations(csv, root=annotations.root, schema=...)` reads
    back the same rows (attribute propagation writes its filled tables this way).

    Returns: a `pandas.DataFrame` (the table itself when it is one dataset's).
    """
    if len(getattr(annotations, "sources", None) or ()) < 2:
        return annotations.table
    table = annotations.table.copy()
    encoded = annotations._encoded

    def relative(paths):
        return [os.path.relpath(p, annotations.root).replace(os.sep, "/") if p else "" for p in paths]

    table["path"] = relative(encoded["path"])
    if "mask" in table.columns or (encoded["mask"] != "").any():
        table["mask"] = relative(encoded["mask"])
    identity = annotations.schema.identity_task
    for column in (*_NAMESPACED, *((identity.name,) if identity is not None else ())):
        table[column] = [str(v) for v in encoded[column]]
    return table
