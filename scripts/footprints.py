#!/usr/bin/env python
"""Workflow adapter: marginal footprints of an experiment's TF and bias motifs.

    python scripts/footprints.py results/<experiment>/configs/footprints.json

The work is done by ``bpflow.footprints.run_footprints_config`` (keys: docs/footprints.md);
this script only turns a bad input into a one-line error and exit status 2, like ``bpflow``.
"""

import sys


def main(argv: list[str]) -> int:
    from bpflow.footprints import footprints_main
    from bpflow.utils import BpflowError

    try:
        return footprints_main(argv)
    except BpflowError as err:
        print(f"footprints: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
