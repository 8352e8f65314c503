"""``python -m bpflow STEP CONFIG.json``: the ``bpflow`` command where no console script is
installed (a package put on ``PYTHONPATH``, as on the device machine of benchmarks/gpu.sh)."""

from bpflow.cli import main

raise SystemExit(main())
