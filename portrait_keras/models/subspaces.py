"""Feature Space Split (paper §5, Fig. 6): which dims of the pooled vector each task reads.

The rule, for any schema (aspects from `schema.aspect_tasks`, in the order appearance,
posture, emotion; tasks in schema order):

1. Each aspect gets one contiguous part of the vector; the parts are disjoint.
2. Inside an aspect, every classification task gets its own disjoint block, sized ∝ its
   number of classes (the paper: "proportional to the number of related labels").
3. An aspect holding the identity task (re-id) also gets a *free* block, not assigned to any
   attribute, of weight `free_ratio · Σ class counts` of the aspect's classification tasks.
   The identity task reads the aspect's **whole** part (its attributes' blocks + free),
   as the paper's re-id reads the whole appearance vector. When re-id is its aspect's only
   task, the free weight is the mean weight of the other aspects (the whole vector if none).
4. A posture or emotion aspect with two or more classification tasks (posture: body and
   arm) gets a *shared* block of weight `shared_ratio · mean class count`, read by all its
   tasks in addition to their own blocks. It sits after the first task's own block, so with
   two tasks each one reads a single contiguous range. Appearance attributes never share
   dims, with or without re-id: the paper holds them unrelated ("disjoint parts").
5. Sizes are `floor(dim · weight / Σ weights)`; the dims left by rounding go to the free
   block when there is one, else one each to the blocks with the largest fractional parts.
   Every block needs at least one dim (`ValueError` otherwise).

Default schema, weights: gender 2, age 5, physique 3, height 3, free 13 | body 5, shared 5,
arm 5 | expression 7 (Σ 48). With `dim=2048` (HRNet-W32): gender [0, 85), age [85, 298),
physique [298, 426), height [426, 554), free [554, 1111) → id reads [0, 1111);
body [1111, 1537) = own 213 + shared 213, arm [1324, 1750); expression [1750, 2048).
"""

import dataclasses
import math

import keras
from keras import ops

from portrait_keras.schema import APPEARANCE, ASPECTS, IDENTITY

FREE = "free"
SHARED = "shared"


@dataclasses.dataclass(frozen=True)
class Block:
    """A contiguous range `[start, stop)` of the feature vector.

    Args:
        aspect: str. The aspect whose part holds the block.
        owner: str. A task name, `"free"` or `"shared"`.
        start: int. First dim.
        stop: int. One past the last dim.
    """

    aspect: str
    owner: str
    start: int
    stop: int

    @property
    def size(self):
        return self.stop - self.start


def fss_blocks(schema, dim, *, tasks=None, free_ratio=1.0, shared_ratio=1.0):
    """The blocks of the Feature Space Split, in vector order (rule in the module docstring).

    Args:
        schema: `Schema`. Tasks and aspects.
        dim: int. Size D of the pooled backbone vector.
        tasks: sequence of str or None. Task names the model has; `None` = all.
            Defaults to `None`.
        free_ratio: float ≥ 0. Weight of an identity aspect's free block relative to the
            sum of its attributes' class counts. Defaults to `1.0`.
        shared_ratio: float ≥ 0. Weight of a shared block relative to the mean class count
            of the aspect's tasks. Defaults to `1.0`.

    Returns:
        list of `Block` covering `[0, dim)` exactly, without overlap.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int. Received: dim={dim!r}")
    for arg, value in (("free_ratio", free_ratio), ("shared_ratio", shared_ratio)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{arg} must be a number ≥ 0. Received: {arg}={value!r}")
    if tasks is not None:
        schema = schema.subset(tasks)

    # === Weights ===
    plan = []  # [aspect, owner, weight]; an identity-only free weight is filled in below.
    for aspect in ASPECTS:
        aspect_tasks = schema.aspect_tasks(aspect)
        if not aspect_tasks:
            continue
        classified = [t for t in aspect_tasks if t.kind != IDENTITY]
        counts = [t.num_classes for t in classified]
        has_identity = len(classified) < len(aspect_tasks)
        own = [[aspect, t.name, float(t.num_classes)] for t in classified]
        if has_identity:
            plan += own + [[aspect, FREE, free_ratio * sum(counts) if counts else None]]
        elif len(classified) >= 2 and aspect != APPEARANCE:
            plan += own[:1] + [[aspect, SHARED, shared_ratio * sum(counts) / len(counts)]] + own[1:]
        else:
            plan += own
    for entry in plan:
        if entry[2] is None:
            others = {}
            for aspect, _, w in plan:
                if aspect != entry[0]:
                    others[aspect] = others.get(aspect, 0.0) + w
            entry[2] = free_ratio * (sum(others.values()) / len(others) if others else 1.0)
    plan = [entry for entry in plan if entry[2] > 0]
    if not plan:
        raise ValueError(f"No block has a positive weight. Received: free_ratio={free_ratio}")

    # === Sizes ===
    total = sum(w for _, _, w in plan)
    exact = [dim * w / total for _, _, w in plan]
    sizes = [math.floor(e) for e in exact]
    left = dim - sum(sizes)
    free = [i for i, (_, owner, _) in enumerate(plan) if owner == FREE]
    if free:
        sizes[free[0]] += left
    else:
        by_fraction = sorted(range(len(plan)), key=lambda i: (sizes[i] - exact[i], i))
        for i in by_fraction[:left]:
            sizes[i] += 1
    if min(sizes) < 1:
        raise ValueError(
            f"dim is too small to give each of the {len(plan)} blocks ({', '.join(o for _, o, _ in plan)}) "
            f"at least one dim. Received: dim={dim}"
        )

    blocks, start = [], 0
    for (aspect, owner, _), size in zip(plan, sizes):
        blocks.append(Block(aspect, owner, start, start + size))
        start += size
    for t in schema.tasks:
        if t.kind == IDENTITY and not any(b.aspect == t.aspect for b in blocks):
            raise ValueError(f"The identity task {t.name!r} gets no dims. Received: free_ratio={free_ratio}")
    return blocks


def fss_layout(schema, dim, *, tasks=None, free_ratio=1.0, shared_ratio=1.0):
    """Ranges each task reads under the Feature Space Split (paper §5).

    Args:
        schema: `Schema`. Tasks and aspects.
        dim: int. Size D of the pooled backbone vector.
        tasks: sequence of str or None. Task names the model has; `None` = all.
            Defaults to `None`.
        free_ratio: float. See `fss_blocks`. Defaults to `1.0`.
        shared_ratio: float. See `fss_blocks`. Defaults to `1.0`.

    Returns:
        dict task name → list of `[start, stop]` (adjacent ranges merged), schema order.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> fss_layout(default_schema(), 256)["arm"]
    [[167, 219]]
    """
    blocks = fss_blocks(schema, dim, tasks=tasks, free_ratio=free_ratio, shared_ratio=shared_ratio)
    sub = schema.subset(tasks) if tasks is not None else schema
    layout = {}
    for t in sub.tasks:
        if t.kind == IDENTITY:
            mine = [b for b in blocks if b.aspect == t.aspect]
        else:
            mine = [b for b in blocks if b.owner == t.name or (b.aspect == t.aspect and b.owner == SHARED)]
        layout[t.name] = _merge([[b.start, b.stop] for b in mine])
    return layout


def sim_mtl_layout(schema, dim, *, tasks=None):
    """Simple multi-task baseline (paper §6.2): every task reads the whole vector.

    Args:
        schema: `Schema`. Tasks.
        dim: int. Size D of the pooled backbone vector.
        tasks: sequence of str or None. Task names; `None` = all. Defaults to `None`.

    Returns:
        dict task name → `[[0, dim]]`.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int. Received: dim={dim!r}")
    sub = schema.subset(tasks) if tasks is not None else schema
    return {t.name: [[0, dim]] for t in sub.tasks}


def single_task_layout(schema, dim, *, tasks=None):
    """Single-task model (paper §6.2): one task reads the whole vector.

    Args:
        schema: `Schema`. Tasks.
        dim: int. Size D of the pooled backbone vector.
        tasks: sequence of one str. The task. Required.

    Returns:
        dict `{task: [[0, dim]]}`.
    """
    if tasks is None or isinstance(tasks, str) or len(tuple(tasks)) != 1:
        raise ValueError(f"A single-task model needs exactly one task name in a sequence. Received: tasks={tasks!r}")
    return sim_mtl_layout(schema, dim, tasks=tasks)


LAYOUTS = {"fss": fss_layout, "sim_mtl": sim_mtl_layout, "single_task": single_task_layout}


def make_layout(head, schema, dim, *, tasks=None, **kwargs):
    """The layout of head variant `head` (`"fss"`, `"sim_mtl"`, `"single_task"`).

    Args:
        head: str. A key of `LAYOUTS`.
        schema: `Schema`. Tasks.
        dim: int. Size D of the pooled backbone vector.
        tasks: sequence of str or None. Task names; `None` = all. Defaults to `None`.
        **kwargs: passed to the layout function (`free_ratio`, `shared_ratio` for `"fss"`).

    Returns:
        dict task name → list of `[start, stop]`.
    """
    if head not in LAYOUTS:
        raise ValueError(f"Unknown head. Allowed: {', '.join(LAYOUTS)}. Received: head={head!r}")
    return LAYOUTS[head](schema, dim, tasks=tasks, **kwargs)


def _merge(ranges):
    merged = []
    for start, stop in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return merged


@keras.saving.register_keras_serializable(package="portrait_keras")
class FeatureSpaceSplit(keras.layers.Layer):
    """Cut the pooled vector into one sub-vector per task (paper §5, Fig. 6).

    Each task's sub-vector is the concatenation, in order, of its `[start, stop)` ranges.
    Build the layout with `fss_layout`, `sim_mtl_layout` or `single_task_layout`.

    Args:
        layout: dict str → list of `[start, stop]`. Ranges per task name; non-empty,
            `0 ≤ start < stop ≤ D`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Shapes:
        input `[B, D]` → dict task → `[B, Σ (stop − start)]`.

    Example:
    >>> split = FeatureSpaceSplit({"a": [[0, 2]], "b": [[1, 3], [4, 5]]})
    >>> {k: tuple(v.shape) for k, v in split(keras.ops.zeros((2, 6))).items()}
    {'a': (2, 2), 'b': (2, 3)}
    """

    def __init__(self, layout, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layout, dict) or not layout:
            raise ValueError(f"layout must be a non-empty dict task → ranges. Received: layout={layout!r}")
        clean = {}
        for task, ranges in layout.items():
            if not isinstance(task, str) or not task:
                raise ValueError(f"layout keys must be task names. Received: layout key {task!r}")
            if not isinstance(ranges, (list, tuple)) or not ranges:
                raise ValueError(f"layout[{task!r}] must be a non-empty list of [start, stop]. Received: {ranges!r}")
            clean[task] = []
            for r in ranges:
                if (
                    not isinstance(r, (list, tuple))
                    or len(r) != 2
                    or not all(isinstance(v, int) for v in r)
                    or not 0 <= r[0] < r[1]
                ):
                    raise ValueError(
                        f"layout[{task!r}]: each range must be [start, stop] ints with 0 ≤ start < stop. "
                        f"Received: {r!r}"
                    )
                clean[task].append([int(r[0]), int(r[1])])
        self.layout = clean

    def build(self, input_shape):
        dim = input_shape[-1]
        need = max(stop for ranges in self.layout.values() for _, stop in ranges)
        if dim is not None and dim < need:
            raise ValueError(
                f"The layout reads dims up to {need} but the input has {dim}. Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        out = {}
        for task, ranges in self.layout.items():
            parts = [inputs[:, start:stop] for start, stop in ranges]
            out[task] = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return out

    def compute_output_shape(self, input_shape):
        return {
            task: (input_shape[0], sum(stop - start for start, stop in ranges)) for task, ranges in self.layout.items()
        }

    def get_config(self):
        config = super().get_config()
        config["layout"] = {task: [list(r) for r in ranges] for task, ranges in self.layout.items()}
        return config
