"""Small shared helpers: user-facing errors, JSON configs, atomic outputs, progress."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger("bpflow")


# Log levels a step's `verbosity` key accepts (either case), as a JSON-schema fragment.
VERBOSITY_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
VERBOSITY_SCHEMA = {"enum": [*VERBOSITY_LEVELS, *(level.lower() for level in VERBOSITY_LEVELS)]}

# the genome and window geometry keys of the data steps (prepare-regions, prepare-data)
WINDOW_SCHEMA_PROPERTIES = {
    "genome": {"type": "string", "minLength": 1},
    "input-length": {"type": "integer", "minimum": 1},
    "output-length": {"type": "integer", "minimum": 1},
    "max-jitter": {"type": "integer", "minimum": 0},
}


class BpflowError(ValueError):
    """An error in the user's input: the CLI prints its one-line message and exits 2.

    A ValueError, so API callers can catch bad arguments the usual way.
    """


def load_json_config(path: str | os.PathLike) -> dict:
    """Read a step's JSON config, with a one-line error naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: config file not found")
    try:
        with open(path) as fh:
            config = json.load(fh)
    except json.JSONDecodeError as err:
        raise BpflowError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise BpflowError(f"{path}: the config must be a JSON object")
    return config



def read_step_config(argv, prog: str, description: str, docs: str) -> tuple[str, dict]:
    """The command line of a step, ``PROG CONFIG.json``: returns (path, loaded config).
    ``docs`` names the page that lists the config's keys (for --help)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help=f"JSON configuration (keys: {docs})")
    path = parser.parse_args(list(argv)).config
    return path, load_json_config(path)

def validate_config(config: dict, schema: dict, source: str) -> None:
    """Validate ``config`` against a JSON schema; raise a one-line BpflowError on failure."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise BpflowError(f"{source}: key {where}: {err.message}")


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


def setup_logging(verbosity: str | int = "INFO") -> None:
    """Plain, timestamped log lines on stderr (readable in a Snakemake log file)."""
    level = verbosity if isinstance(verbosity, int) else getattr(logging, str(verbosity).upper(), logging.INFO)
    root = logging.getLogger()
    if not any(getattr(h, "_bpflow", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._bpflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


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
