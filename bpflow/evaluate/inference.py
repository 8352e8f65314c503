"""Running a Keras model over one-hot sequences: shapes, reverse-complement averaging, batches.

The low-level inference shared by prediction, footprints, quality checks and contributions.
A BPNet-style model has one input (batch, input_length, 4) and outputs each head's profile
logits (batch, output_length, tasks), then each head's log counts (batch, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from bpflow.formats.sequence import revcomp_task_order, reverse_complement_one_hot
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError

DEFAULT_BATCH_SIZE = 64


@dataclass
class ModelShape:
    input_length: int
    output_length: int
    num_tasks: list[int]

    @property
    def num_heads(self) -> int:
        return len(self.num_tasks)

    @property
    def left_flank(self) -> int:
        return (self.input_length - self.output_length) // 2

    @property
    def right_flank(self) -> int:
        return self.input_length - self.output_length - self.left_flank


def model_shape(model, source: str = "model") -> ModelShape:
    """Input/output lengths and tasks per head of a BPNet-style model (profiles, then counts)."""
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].shape[2] != 4:
        raise BpflowError(f"{source}: expected one input of shape (batch, length, 4)")
    input_length = inputs[0].shape[1]
    if input_length is None:
        raise BpflowError(f"{source}: the model's input length is not fixed")
    outputs = model.outputs
    if len(outputs) % 2 or not outputs:
        raise BpflowError(
            f"{source}: expected profile outputs then counts outputs (an even number), got {len(outputs)} outputs"
        )
    k = len(outputs) // 2
    profiles, counts = outputs[:k], outputs[k:]
    for i, p in enumerate(profiles):
        if len(p.shape) != 3:
            raise BpflowError(f"{source}: output {i} has shape {tuple(p.shape)}; expected (batch, length, tasks)")
    for i, c in enumerate(counts):
        if tuple(c.shape[1:]) not in ((1,), ()):
            raise BpflowError(f"{source}: output {k + i} has shape {tuple(c.shape)}; expected (batch, 1) log counts")
    output_length = profiles[0].shape[1]
    if any(p.shape[1] != output_length for p in profiles):
        raise BpflowError(f"{source}: the profile outputs differ in length")
    crop_offset(input_length, output_length, f"{source}: the model's input")
    return ModelShape(int(input_length), int(output_length), [int(p.shape[2]) for p in profiles])


def resolve_task_orders(
    heads: list[dict] | None, shape: ModelShape, source: str, revcomp: bool = True
) -> tuple[list[str], list[list[int]] | None]:
    """Head names and reverse-complement task orders from a ``heads`` config (or defaults).

    Without ``heads`` every head uses "auto".  Orders are only resolved (and a head with more
    than two tasks and no explicit order only fails) when ``revcomp`` is true; else None.
    """
    if heads is None:
        heads = [{} for _ in range(shape.num_heads)]
        names_given = False
    else:
        names_given = True
    if len(heads) != shape.num_heads:
        raise BpflowError(f"{source}: key heads lists {len(heads)} heads but the model has {shape.num_heads}")
    names, orders = [], []
    for i, (head, tasks) in enumerate(zip(heads, shape.num_tasks)):
        name = head.get("head-name", f"head_{i}")
        where = f"{source}: head {name!r}" if names_given else f"head {i}"
        if "num-tasks" in head and head["num-tasks"] != tasks:
            raise BpflowError(f"{where}: num-tasks is {head['num-tasks']} but the model's head {i} has {tasks}")
        names.append(name)
        if not revcomp:
            continue
        orders.append(revcomp_task_order(head.get("revcomp-task-order", "auto"), tasks, where))
    if len(set(names)) != len(names):
        raise BpflowError(f"{source}: duplicate head names in key heads")
    return names, (orders if revcomp else None)


def predict_batch(
    model,
    one_hot: np.ndarray,
    num_heads: int,
    revcomp_average: bool = False,
    task_orders: Sequence[Sequence[int]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the model on one batch (b, input_length, 4).

    Returns (logits per head (b, out, tasks), log counts per head (b,)), float32.  With
    ``revcomp_average`` the reverse complement is predicted in the same call; its outputs are
    flipped back - positions reversed, forward task i taken from reverse-complement task
    ``task_orders[head][i]`` - and averaged with the forward outputs (logits and log counts).
    """
    x = np.asarray(one_hot, dtype=np.float32)
    b = x.shape[0]
    if revcomp_average:
        x = np.concatenate([x, reverse_complement_one_hot(x)], axis=0)
    outputs = model.predict_on_batch(x)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    outputs = [np.asarray(o) for o in outputs]
    logits = [outputs[i] for i in range(num_heads)]
    logcounts = [outputs[num_heads + i].reshape(-1) for i in range(num_heads)]
    if revcomp_average:
        if task_orders is None:
            task_orders = [revcomp_task_order("auto", lg.shape[2], f"head {i}") for i, lg in enumerate(logits)]
        for i in range(num_heads):
            order = np.asarray(task_orders[i])
            back = logits[i][b:, ::-1, :][:, :, order]
            logits[i] = ((logits[i][:b].astype(np.float64) + back) / 2).astype(np.float32)
            logcounts[i] = ((logcounts[i][:b].astype(np.float64) + logcounts[i][b:]) / 2).astype(np.float32)
    return ([np.asarray(lg, dtype=np.float32) for lg in logits], [np.asarray(lc, dtype=np.float32) for lc in logcounts])


def _padded_batches(batches: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Pad every batch to ``batch_size`` rows (one compiled shape); yield (padded, real rows)."""
    for x in batches:
        n = x.shape[0]
        if n < batch_size:
            pad = np.zeros((batch_size - n,) + x.shape[1:], dtype=x.dtype)
            x = np.concatenate([x, pad], axis=0)
        yield x, n


def predict_arrays(
    model,
    one_hot: np.ndarray,
    batch_size: int = DEFAULT_BATCH_SIZE,
    revcomp_average: bool = False,
    task_orders: Sequence[Sequence[int]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predict in-memory one-hot sequences (N, input_length, 4); returns (logits, logcounts) per head."""
    shape = model_shape(model)
    one_hot = np.asarray(one_hot)
    if one_hot.ndim != 3 or one_hot.shape[1:] != (shape.input_length, 4):
        raise BpflowError(f"sequences have shape {one_hot.shape}; the model needs (N, {shape.input_length}, 4)")
    logits = [[] for _ in range(shape.num_heads)]
    logcounts = [[] for _ in range(shape.num_heads)]
    chunks = (one_hot[a : a + batch_size] for a in range(0, len(one_hot), batch_size))
    for x, n in _padded_batches(chunks, batch_size):
        lg, lc = predict_batch(model, x, shape.num_heads, revcomp_average, task_orders)
        for i in range(shape.num_heads):
            logits[i].append(lg[i][:n])
            logcounts[i].append(lc[i][:n])
    empty = [np.zeros((0, shape.output_length, t), np.float32) for t in shape.num_tasks]
    return (
        [np.concatenate(v) if v else empty[i] for i, v in enumerate(logits)],
        [np.concatenate(v) if v else np.zeros(0, np.float32) for v in logcounts],
    )


def prefetch(iterable: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead.

    Sequence extraction then overlaps with the model's work; an exception in the producer is
    re-raised in the consumer; stopping early stops the producer.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as err:  # noqa: BLE001  (handed to the consumer)
            put((err, None))

    thread = threading.Thread(target=produce, name="bpflow-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            err, item = items.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()
