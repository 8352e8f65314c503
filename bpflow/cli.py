"""Command line: ``bpflow <step> CONFIG.json [--verbosity LEVEL] [--threads N] [--backend B]``.

The JSON config is the record of what a step computes; how to run it (log level, threads, the
Keras backend of the steps that run a model) travels on the command line.  A few steps take
their own flags instead of a config (``length-calc``, ``inspect-data``; ``simulate`` also
takes ``--preset``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from bpflow.allocator import tune_malloc
from bpflow.backend import MODEL_STEPS, choose_backend, without_tensorflow

# step name -> (module, function, one-line help).  Each function takes the argument list
# after the step name and returns an exit code (or None for 0).  Modules are imported only
# when their step runs, so ``bpflow --help`` is fast and the data steps never import Keras.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "length-calc": ("bpflow.lengths", "main", "input/output length arithmetic of a BPNet"),
    "simulate": ("bpflow.simulate", "main", "write a synthetic genome, bigWigs, peaks and truth"),
    "prepare-regions": ("bpflow.prepare.regions", "main", "peak and background region sets per split"),
    "prepare-data": ("bpflow.prepare.datasets", "main", "HDF5 training datasets from FASTA + bigWig"),
    "inspect-data": ("bpflow.prepare.inspect", "main", "summarise and check an HDF5 dataset"),
    "train-bias": ("bpflow.train.steps", "train_bias_main", "train the bias (solo) model"),
    "train-transformation": ("bpflow.train.steps", "train_transformation_main", "fit the bias transformation"),
    "train-combined": ("bpflow.train.steps", "train_combined_main", "train the combined/residual model"),
    "qc-bias": ("bpflow.evaluate.qc", "bias_main", "quality checks of a trained bias model"),
    "qc-combined": ("bpflow.evaluate.qc", "main", "quality checks of a trained combined model"),
    "predict": ("bpflow.evaluate.predict", "main", "predict over regions or whole chromosomes"),
    "predictions-to-bigwig": ("bpflow.evaluate.bigwig", "main", "prediction HDF5 -> bigWig"),
    "metrics": ("bpflow.evaluate.metrics", "main", "metrics on held-out chromosomes"),
    "footprints": ("bpflow.evaluate.footprints", "main", "marginal footprints of TF and bias motifs"),
    "contributions": ("bpflow.interpret.step", "main", "DeepSHAP contribution scores over regions"),
    "motifs": ("bpflow.interpret.motifs", "main", "TF-MoDISco patterns, TOMTOM matches, factorization check"),
    "report-figures": ("bpflow.report.step", "main", "the report's figures and tables"),
}
# other names of a step (BPReveal's name of the bias model is the solo model)
ALIASES = {"train-solo": "train-bias"}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: bpflow <step> CONFIG.json [--verbosity LEVEL] [--threads N] [--backend B]   (or bpflow <step> --help)",
        "",
        "steps:",
    ]
    lines += [f"  {name:<{width}}  {info[2]}" for name, info in COMMANDS.items()]
    lines += ["", "aliases: " + ", ".join(f"{a} = {s}" for a, s in ALIASES.items())]
    return "\n".join(lines)


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``--name V`` / ``--name=V`` in an argument list, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _threads(argv: list[str]) -> int | None:
    """The value of ``--threads N`` / ``--threads=N`` in an argument list, if any."""
    value = _option(argv, "threads")
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else None


def _set_backend(requested: str | None) -> None:
    """Set KERAS_BACKEND for a step that runs a model (Keras reads it once, when the step's
    code first imports it).  In a process that has imported Keras already (a test, a notebook)
    the backend is fixed: an explicit --backend must then agree with it."""
    from bpflow.utils import BpflowError

    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if requested not in (None, "auto", current):
            raise BpflowError(f"--backend {requested}: Keras is already imported with the {current} backend")
        return
    os.environ["KERAS_BACKEND"] = choose_backend(requested or "auto")[0]


def main(argv: list[str] | None = None) -> int:
    from bpflow.utils import BpflowError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from bpflow import __version__

        print(__version__)
        return 0
    step, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if step not in COMMANDS:
        print(f"bpflow: unknown step {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    threads = _threads(rest)
    if threads is not None:
        # read by TensorFlow when its runtime starts, which is after this (Keras is imported by
        # the step's module); Snakemake's {threads} arrive here
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(min(2, threads))
    module_name, func_name, _ = COMMANDS[step]
    try:
        hidden = contextlib.nullcontext()
        if step in MODEL_STEPS:
            # before the backend starts its threads (bpflow/allocator.py)
            tune_malloc()
            _set_backend(_option(rest, "backend"))
            hidden = without_tensorflow()  # under JAX: Keras would import TensorFlow for nothing
        with hidden:
            func = getattr(importlib.import_module(module_name), func_name)
            code = func(rest)
    except BpflowError as err:
        print(f"bpflow {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bpflow {argv[0]}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
