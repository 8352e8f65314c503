"""Small shared helpers: user-facing errors, step command lines and configs, atomic outputs,
logging, progress."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import numbers
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger("bpflow")


class BpflowError(ValueError):
    """An error in the user's input: the CLI prints its one-line message and exits 2.

    A ValueError, so API callers can catch bad arguments the usual way.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def format_value(value, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, "NA" for None, NaN and infinities."""
    if value is None:
        return "NA"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        return "NA" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


class _DuplicateKey(Exception):
    """A key given twice in one JSON object (raised by :func:`_refuse_duplicate_keys`)."""


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` of :func:`load_json_config`: json keeps the last of repeated
    keys silently; refuse them instead."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_json_config(path: str | os.PathLike) -> dict:
    """Read a step's JSON config, with a one-line error naming the file on failure
    (a key repeated in one object is an error, not last-one-wins)."""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: config file not found")
    try:
        text = path.read_text()
        config = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as err:
        raise BpflowError(f"{path}: not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise BpflowError(f"{path}: not a text file ({err.reason})") from None
    except _DuplicateKey as dup:
        key = dup.args[0]
        # json does not say where the object is; name the lines the key appears on
        pattern = re.compile(rf"{re.escape(json.dumps(key, ensure_ascii=False))}\s*:")
        lines = [str(i) for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
        where = f" (it appears on lines {', '.join(lines)})" if len(lines) > 1 else ""
        raise BpflowError(f"{path}: key {key!r} is given twice in one JSON object{where}; give each key once") from None
    if not isinstance(config, dict):
        raise BpflowError(f"{path}: the config must be a JSON object")
    return config


VERBOSITY_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class RunOptions:
    """How to run a step (not what it computes): the command line's ``--verbosity`` and
    ``--threads``; None where not given."""

    verbosity: str | None = None
    threads: int | None = None


def step_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the run-time options every step takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--verbosity",
        type=str.upper,
        choices=VERBOSITY_LEVELS,
        default=None,
        help="log level (overrides the config's verbosity key; default INFO)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="worker threads (overrides the config's num-threads key, where the step has one)",
    )
    return parser


def read_step_config(argv, step: str, description: str, docs: str) -> tuple[str, dict, RunOptions]:
    """The command line of a step, ``bpflow STEP CONFIG.json [--verbosity L] [--threads N]``
    (and ``[--backend B]`` where the step runs a model).

    Loads the config, checks it against the step's schema (filling defaults, see
    :mod:`bpflow.schemas`), applies the run-time options (``verbosity``, and ``num-threads``
    where the step has it) and sets up logging.  Returns (path, config, options).  ``docs``
    names the page that lists the config's keys (for --help).
    """
    from bpflow import schemas
    from bpflow.backend import BACKENDS, MODEL_STEPS

    parser = step_parser(f"bpflow {step}", description)
    parser.add_argument("config", help=f"JSON configuration (keys: {docs})")
    if step in MODEL_STEPS:
        # acted on by bpflow.cli before Keras is imported; listed here for --help
        parser.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="Keras backend (default auto: KERAS_BACKEND if set, else jax without a visible "
            "NVIDIA GPU and tensorflow with one; see docs/training.md)",
        )
    args = parser.parse_args(list(argv))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    options = RunOptions(args.verbosity, args.threads)
    cfg = schemas.validate(load_json_config(args.config), step, args.config)
    if options.verbosity is not None:
        cfg["verbosity"] = options.verbosity
    if options.threads is not None and "num-threads" in schemas.load_schema(step).get("properties", {}):
        cfg["num-threads"] = options.threads
    setup_logging(cfg.get("verbosity", "INFO"))
    return args.config, cfg, options


def read_head(path, size: int, what: str) -> bytes:
    """The first ``size`` bytes of ``path`` (to tell its format), or a one-line error naming the
    file when it cannot be read or is empty; ``what`` names it ("FASTA file", ...)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(size)
    except PermissionError:
        raise BpflowError(f"{path}: cannot read the {what}: permission denied") from None
    except OSError as err:
        raise BpflowError(f"{path}: cannot read the {what}: {err.strerror or first_line(err)}") from None
    if not head:
        raise BpflowError(f"{path}: the {what} is empty")
    return head


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden sibling of ``path`` that keeps its suffix (Keras insists on ``.keras``)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` on success, delete it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, default=_json_default)
            fh.write("\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written (not the one of
    the first call: a process that runs several steps, or redirects stderr, logs where it
    writes its errors)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(verbosity: str | int = "INFO") -> None:
    """Plain, timestamped log lines on stderr (readable in a Snakemake log file)."""
    level = verbosity if isinstance(verbosity, int) else getattr(logging, str(verbosity).upper(), logging.INFO)
    root = logging.getLogger()
    if not any(getattr(h, "_bpflow", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._bpflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # JAX logs at INFO that it found no TPU/GPU plugin on a CPU machine: not the user's concern
    logging.getLogger("jax._src.xla_bridge").setLevel(max(level, logging.WARNING))


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator:
    """A tqdm bar on a terminal; otherwise a plain log line roughly every 10% / 30 s."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit)
        return
    start = last = time.monotonic()
    step = max(1, (total or 0) // 10)
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if (total and done % step == 0) or now - last > 30 or (total and done == total):
            last = now
            of = f"/{total}" if total else ""
            logger.info("%s: %d%s %s (%.1f s)", desc, done, of, unit, now - start)
