"""Command line: ``bpflow <step> CONFIG.json`` (and a few steps with their own flags)."""

from __future__ import annotations

import importlib
import sys

# step name -> (module, function, one-line help).  Each function takes the argument list
# after the step name and returns an exit code (or None for 0).  Modules are imported only
# when their step runs, so ``bpflow --help`` is fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "length-calc": ("bpflow.lengths", "main", "input/output length arithmetic of a BPNet"),
    "simulate": ("bpflow.simulate", "main", "write a synthetic genome, bigWigs, peaks and truth"),
    "prepare-regions": ("bpflow.regions", "main", "peak and background region sets per split"),
    "prepare-data": ("bpflow.dataprep", "main", "HDF5 training datasets from FASTA + bigWig"),
    "inspect-data": ("bpflow.dataprep", "inspect_main", "summarise and check an HDF5 dataset"),
    "train-solo": ("bpflow.training", "train_solo_main", "train a solo (bias) model"),
    "train-transformation": ("bpflow.training", "train_transformation_main", "fit the bias transformation"),
    "train-combined": ("bpflow.training", "train_combined_main", "train the combined/residual model"),
    "predict": ("bpflow.predict", "main", "predict over regions or whole chromosomes"),
    "predictions-to-bigwig": ("bpflow.predict", "to_bigwig_main", "prediction HDF5 -> bigWig"),
    "metrics": ("bpflow.metrics", "main", "metrics on held-out chromosomes"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: bpflow <step> CONFIG.json   (or bpflow <step> --help)", "", "steps:"]
    lines += [f"  {name:<{width}}  {info[2]}" for name, info in COMMANDS.items()]
    return "\n".join(lines)


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
    step, rest = argv[0], argv[1:]
    if step not in COMMANDS:
        print(f"bpflow: unknown step {step!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[step]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        code = func(rest)
    except BpflowError as err:
        print(f"bpflow {step}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bpflow {step}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
