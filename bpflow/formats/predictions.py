"""Prediction files: BPReveal's prediction layout plus bpflow's attributes.

One row per predicted output window::

    head_<i>/logits      float32 (N, output_length, num_tasks)   profile logits of head i
    head_<i>/logcounts   float32 (N,)                            log counts of head i
    chrom_names, chrom_sizes, coords_chrom, coords_start, coords_stop[, coords_strand]
                         (bpflow.formats.coords; coords_strand only when copied from a dataset)

Each ``head_<i>`` group has attributes ``head-name`` and ``num-tasks``; the root has
``bpflow-version``, ``model-file``, ``input-length``, ``output-length``, ``revcomp-average``,
``source`` and ``config`` (JSON).  The predicted profile of a head is
softmax(logits over all positions and tasks jointly) * exp(logcounts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bpflow.formats.coords import Coords, decode_strings, open_hdf5, read_coords, read_strands
from bpflow.utils import BpflowError


class PredictionWriter:
    """Writes a prediction file row block by row block (fixed number of rows, known up front).

    Use on a temporary path inside :func:`bpflow.utils.atomic_output`.
    """

    def __init__(
        self,
        path,
        num_samples: int,
        output_length: int,
        num_tasks: Sequence[int],
        chrom_names: Sequence[str],
        chrom_sizes: Sequence[int],
        head_names: Sequence[str] | None = None,
        attrs: dict | None = None,
        strand_dtype=None,
    ):
        import h5py

        self.num_samples = int(num_samples)
        self.num_tasks = [int(t) for t in num_tasks]
        self.file = h5py.File(path, "w")
        f = self.file
        names = [str(n) for n in chrom_names]
        width = max([1] + [len(n.encode()) for n in names])
        f.create_dataset("chrom_names", data=np.array([n.encode() for n in names], dtype=f"S{width}"))
        f.create_dataset("chrom_sizes", data=np.asarray(list(chrom_sizes), dtype=np.int64).reshape(-1))
        n = self.num_samples
        rows = max(1, min(n, max(1, (1 << 20) // max(1, output_length * max(self.num_tasks) * 4))))
        self.coords_chrom = f.create_dataset("coords_chrom", (n,), dtype=np.int32)
        self.coords_start = f.create_dataset("coords_start", (n,), dtype=np.int64)
        self.coords_stop = f.create_dataset("coords_stop", (n,), dtype=np.int64)
        self.coords_strand = (
            f.create_dataset("coords_strand", (n,), dtype=strand_dtype) if strand_dtype is not None else None
        )
        self.logits = []
        self.logcounts = []
        head_names = list(head_names) if head_names else [f"head_{i}" for i in range(len(self.num_tasks))]
        for i, tasks in enumerate(self.num_tasks):
            group = f.create_group(f"head_{i}")
            group.attrs["head-name"] = head_names[i]
            group.attrs["num-tasks"] = tasks
            chunks = (rows, output_length, tasks) if n else None
            self.logits.append(
                group.create_dataset("logits", (n, output_length, tasks), dtype=np.float32, chunks=chunks)
            )
            self.logcounts.append(group.create_dataset("logcounts", (n,), dtype=np.float32))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value

    def write(
        self, row: int, chrom, start, stop, logits: Sequence[np.ndarray], logcounts: Sequence[np.ndarray], strand=None
    ) -> None:
        """Write rows ``row .. row + len(start) - 1``."""
        sl = slice(row, row + len(start))
        self.coords_chrom[sl] = chrom
        self.coords_start[sl] = start
        self.coords_stop[sl] = stop
        if self.coords_strand is not None and strand is not None:
            self.coords_strand[sl] = strand
        for i in range(len(self.num_tasks)):
            self.logits[i][sl] = logits[i]
            self.logcounts[i][sl] = np.asarray(logcounts[i]).reshape(-1)

    def close(self) -> None:
        self.file.close()


class PredictionFile:
    """Read access to a prediction file; use as a context manager."""

    def __init__(self, path):
        self.path = str(path)
        self.file = open_hdf5(path, "prediction file")
        f = self.file
        self.num_heads = 0
        while f"head_{self.num_heads}" in f:
            self.num_heads += 1
        if self.num_heads == 0:
            self.close()
            raise BpflowError(f"{path}: not a prediction file (no head_0 group)")
        shapes = []
        for i in range(self.num_heads):
            group = f[f"head_{i}"]
            if "logits" not in group or "logcounts" not in group:
                self.close()
                raise BpflowError(f"{path}: head_{i} lacks logits or logcounts")
            shapes.append((group["logits"].shape, group["logcounts"].shape))
        self.num_samples = shapes[0][0][0]
        self.output_length = shapes[0][0][1]
        for i, (lshape, cshape) in enumerate(shapes):
            if (
                len(lshape) != 3
                or lshape[:2] != (self.num_samples, self.output_length)
                or int(np.prod(cshape)) != self.num_samples
            ):
                self.close()
                raise BpflowError(f"{path}: head_{i} shapes {lshape} / {cshape} disagree with head_0")

    def __enter__(self) -> "PredictionFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def num_tasks(self, head: int) -> int:
        return int(self.file[f"head_{head}/logits"].shape[2])

    def head_name(self, head: int) -> str:
        name = self.file[f"head_{head}"].attrs.get("head-name")
        return str(name.decode() if isinstance(name, bytes) else name) if name is not None else f"head_{head}"

    def head_index(self, head: int | str) -> int:
        """Index of a head given as an index or a name."""
        if isinstance(head, (int, np.integer)):
            if not 0 <= head < self.num_heads:
                raise BpflowError(f"{self.path}: no head {head} (the file has {self.num_heads})")
            return int(head)
        names = [self.head_name(i) for i in range(self.num_heads)]
        if head not in names:
            raise BpflowError(f"{self.path}: no head named {head!r} (heads: {', '.join(names)})")
        return names.index(head)

    def logits(self, head: int, rows=slice(None)) -> np.ndarray:
        return self.file[f"head_{head}/logits"][rows]

    def logcounts(self, head: int, rows=slice(None)) -> np.ndarray:
        return np.asarray(self.file[f"head_{head}/logcounts"][rows]).reshape(-1)

    @property
    def chrom_names(self) -> list[str]:
        return decode_strings(self.file["chrom_names"][...]) if "chrom_names" in self.file else []

    @property
    def chrom_sizes(self) -> dict[str, int]:
        if "chrom_sizes" not in self.file:
            return {}
        sizes = self.file["chrom_sizes"][...].astype(np.int64).reshape(-1)
        return {n: int(s) for n, s in zip(self.chrom_names, sizes) if s >= 0}

    def coords(self) -> Coords | None:
        coords = read_coords(self.file, self.path)
        if coords is not None and (coords.chrom < 0).all():
            return None
        return coords

    def strands(self) -> np.ndarray | None:
        return read_strands(self.file, self.path)
