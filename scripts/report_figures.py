#!/usr/bin/env python
"""Workflow adapter: the report's figures and tables, drawn by ``bpflow.report``.

    python scripts/report_figures.py counts-scatter --data D.h5 --prediction combined=P.h5 ... -o OUT.png
    python scripts/report_figures.py example-regions --data D.h5 --prediction combined=P.h5 ... -o OUT.png
    python scripts/report_figures.py metrics-table --metrics peaks.json background.json -o OUT.html
    python scripts/report_figures.py loss-curves --history bias=H.json ... -o OUT.png
    python scripts/report_figures.py qc-table --qc combined.qc.json -o OUT.html

Several figures in one process (Keras is imported once): separate them with a lone ``+``,
e.g. ``report_figures.py metrics-table ... + counts-scatter ...``.  A bad input gives a
one-line error and exit status 2, like ``bpflow``.
"""

import argparse
import sys


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"report_figures: {what} {value!r} must be LABEL=PATH")
        out[label] = path
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="report_figures", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="figure", required=True)
    for name, help_text in (("counts-scatter", "predicted vs observed log counts, one panel per model"),
                            ("example-regions", "observed and predicted profiles of the top regions")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data", required=True, help="dataset HDF5 the predictions were made on")
        p.add_argument("--prediction", action="append", required=True, metavar="LABEL=H5",
                       help="a prediction file (repeat; panels in this order)")
        p.add_argument("--head", type=int, default=0, help="head index (0)")
        p.add_argument("-o", "--output", required=True)
        if name == "counts-scatter":
            p.add_argument("--region-set", default=None, help="name shown in the panel titles")
        else:
            p.add_argument("--num", type=int, default=3, help="regions shown (3)")
    p = sub.add_parser("metrics-table", help="bpflow metrics JSON files as one HTML table")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--caption", default=None)
    p.add_argument("-o", "--output", required=True)
    p = sub.add_parser("qc-table", help="train-combined's quality checks (<prefix>.qc.json) as HTML")
    p.add_argument("--qc", required=True)
    p.add_argument("--caption", default=None)
    p.add_argument("-o", "--output", required=True)
    p = sub.add_parser("loss-curves", help="one panel per training stage")
    p.add_argument("--history", action="append", required=True, metavar="STAGE=JSON")
    p.add_argument("-o", "--output", required=True)
    parser.add_argument("--verbosity", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    commands, current = [], []
    for arg in argv:
        if arg == "+":
            commands.append(current)
            current = []
        else:
            current.append(arg)
    commands.append(current)
    parsed = [parse(c) for c in commands]   # every command line is checked before any work
    for args in parsed:
        code = run(args)
        if code:
            return code
    return 0


def run(args: argparse.Namespace) -> int:
    from bpflow import report
    from bpflow.utils import BpflowError, setup_logging

    setup_logging(args.verbosity)
    try:
        if args.figure == "counts-scatter":
            r = report.counts_scatter_from_files(_pairs(args.prediction, "--prediction"), args.data, args.output,
                                                 head=args.head, region_set=args.region_set)
            print("counts Pearson: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))
        elif args.figure == "example-regions":
            shown = report.plot_example_regions(args.data, _pairs(args.prediction, "--prediction"), args.output,
                                                num=args.num, head=args.head)
            print(f"example regions (sample indices): {shown}")
        elif args.figure == "metrics-table":
            report.metrics_table_html(args.metrics, args.output, args.caption)
        elif args.figure == "qc-table":
            report.qc_table_html(args.qc, args.output, args.caption)
        else:
            report.plot_loss_curves(_pairs(args.history, "--history"), args.output)
    except BpflowError as err:
        print(f"report_figures {args.figure}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
