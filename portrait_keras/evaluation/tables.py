"""The flat metrics dict of `evaluate` (`metrics.json`) grouped for a reader.

`metric_sections(metrics)` sorts the keys into sections: PIQ and its aspects, the paper's
Macro re-id, the Market-1501 re-id, Macro F1 per task, the pedestrian-attribute metrics as one
row per task, the uncertainty weights, and anything else. `format_table` prints them as text
(`portrait-keras evaluate`, `baseline`, the end of `train`); the run report renders the same
sections as Markdown and HTML tables. Every value stays under its own key in `--json` and
`metrics.json`.
"""

from typing import NamedTuple

PAR_COLUMNS = (("mA", "mA"), ("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"))
ASPECT_KEYS = ("piq", "reid", "appearance", "posture", "emotion")


class Section(NamedTuple):
    """A titled table of metrics.

    Attributes:
        title: str.
        header: tuple of str. Column names; the first names the row labels.
        rows: list of tuples `(label, value, ...)`, a value a float or None (not measured).
    """

    title: str
    header: tuple
    rows: list


def metric_sections(metrics):
    """The metrics in sections (module docstring), each key in exactly one; empty sections are
    left out.

    Args:
        metrics: mapping of metric name to number (`evaluate`, `metrics.json`).

    Returns: list of `Section`.

    Example:
    >>> sections = metric_sections({"reid_mAP": 0.5, "par_mA_age": 0.7, "par_f1_age": 0.6, "loss": 1.0})
    >>> for section in sections:
    ...     print(section.header, section.rows)
    ('metric', 'value') [('reid_mAP', 0.5)]
    ('task', 'mA', 'accuracy', 'precision', 'recall', 'F1') [('age', 0.7, None, None, None, 0.6)]
    ('metric', 'value') [('loss', 1.0)]
    """
    metrics = {str(k): float(v) for k, v in metrics.items()}
    taken = set()

    def pick(keys):
        keys = [k for k in keys if k in metrics and k not in taken]
        taken.update(keys)
        return [(k, metrics[k]) for k in keys]

    def starting(prefix, exclude=()):
        return [k for k in metrics if k.startswith(prefix) and not k.startswith(exclude)]

    par = {}
    for key in metrics:
        for column, _ in PAR_COLUMNS:
            if key.startswith(f"par_{column}_"):
                par.setdefault(key[len(f"par_{column}_") :], {})[column] = metrics[key]
                taken.add(key)
    sections = [
        Section("PIQ and its aspects (paper eq. 2)", ("metric", "value"), pick(ASPECT_KEYS)),
        Section(
            "Re-id, paper: Macro mAP and CMC (per identity, then over identities; §4.3)",
            ("metric", "value"),
            pick(starting("reid_", exclude=("reid_micro_", "reid_mINP"))),
        ),
        Section(
            "Re-id, Market-1501: mAP and CMC over queries, mINP (Ye et al. 2021)",
            ("metric", "value"),
            pick(starting("reid_micro_") + ["reid_mINP"]),
        ),
        Section("Macro F1 per task (paper §4.3)", ("metric", "value"), pick(starting("f1_"))),
        Section(
            "Attributes per task (PAR review eqs. 1-3; mA label-based, the rest instance-based; "
            "keys par_<metric>_<task>)",
            ("task", *(label for _, label in PAR_COLUMNS)),
            [(task, *(values.get(c) for c, _ in PAR_COLUMNS)) for task, values in par.items()],
        ),
        Section("Uncertainty weights s_i (eq. 6)", ("metric", "value"), pick(starting("s_"))),
    ]
    sections.append(Section("Other", ("metric", "value"), pick(list(metrics))))
    return [s for s in sections if s.rows]


def format_value(value):
    """A metric as the tables show it: 4 decimals, `-` when not measured."""
    return "-" if value is None else f"{value:.4f}"


def format_table(metrics):
    """The metrics as aligned text, one titled block per section (`metric_sections`).

    Example:
    >>> print(format_table({"piq": 0.5, "reid_mAP": 0.25}))
    PIQ and its aspects (paper eq. 2)
      piq       0.5000
    <BLANKLINE>
    Re-id, paper: Macro mAP and CMC (per identity, then over identities; §4.3)
      reid_mAP  0.2500
    """
    sections = metric_sections(metrics)
    key_width = max((len(r[0]) for s in sections if len(s.header) == 2 for r in s.rows), default=0)
    blocks = []
    for section in sections:
        lines = [section.title]
        if len(section.header) == 2:
            lines += [f"  {label:<{key_width}}  {format_value(value)}" for label, value in section.rows]
        else:
            cells = [section.header] + [(r[0], *map(format_value, r[1:])) for r in section.rows]
            widths = [max(len(str(row[i])) for row in cells) for i in range(len(section.header))]
            for row in cells:
                first = f"{row[0]:<{widths[0]}}"
                rest = "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:]))
                lines.append(f"  {first}  {rest}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
