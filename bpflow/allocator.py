"""The C heap of a step that runs a model: glibc's malloc told to keep the memory it gets.

Under JAX (XLA's CPU runtime) and TensorFlow, each training or prediction batch allocates and
frees buffers of several MB from worker threads.  With its defaults glibc gives such threads
arenas of their own, whose heaps it shrinks back to the system after a free, and maps blocks
above its mmap threshold afresh each time; either way the next batch writes to pages the
kernel must zero-fill one 4-KB page fault at a time.  On the suite's combined stage that was
~100,000 page faults a second, a quarter of the CPU time in the kernel and ~30 % of each
epoch's wall time (benchmarks/README.md, "tenth session").  :func:`tune_malloc` sets, through
``mallopt``: one arena for every thread (``M_ARENA_MAX``), no separate mappings for large
blocks (``M_MMAP_MAX`` 0), no trimming of the heap's top (``M_TRIM_THRESHOLD``) and growth in
64-MB steps (``M_TOP_PAD``).  Freed memory is then reused, not returned: a process's resident
size stays at its peak, and the peak is higher (the suite's combined stage 1.1 -> 1.5 GB; a
ChromBPNet-shaped model, whose 35-MB activations no longer get mappings of their own, 1.5 ->
3.2 GB; ``BPFLOW_MALLOC=system`` where memory is short).  The numbers computed are the same.

It must run before the backend starts its threads (an arena, once a thread has one, stays its
own): the CLI calls it for the model steps before importing the step's code.
``BPFLOW_MALLOC=system`` in the environment keeps glibc's defaults; so does an allocator
preloaded in its place (``LD_PRELOAD`` naming a ``*malloc*`` library: gperftools' tcmalloc was a
little faster still in a short run); on a C library other than glibc (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
SETTINGS = (
    (M_ARENA_MAX, 1),
    (M_MMAP_MAX, 0),
    (M_TRIM_THRESHOLD, 2**31 - 1),  # an int: the largest value mallopt takes
    (M_TOP_PAD, 64 << 20),
)
ENV = "BPFLOW_MALLOC"

# what tune_malloc did in this process (recorded in a training run's environment)
state = "glibc defaults"


def tune_malloc(environ=None) -> str:
    """Apply :data:`SETTINGS` to glibc's malloc; returns (and keeps in :data:`state`) what was
    done: "glibc, tuned", or why not."""
    global state
    environ = os.environ if environ is None else environ
    preloaded = [lib for lib in environ.get("LD_PRELOAD", "").replace(":", " ").split() if "malloc" in lib]
    if environ.get(ENV, "").strip().lower() == "system":
        state = f"glibc defaults ({ENV}=system)"
    elif preloaded:
        state = f"preloaded ({os.path.basename(preloaded[0])})"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        state = "system allocator (not glibc)"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        # every setting is tried (each helps alone); mallopt returns 1 on success
        refused = [param for param, value in SETTINGS if libc.mallopt(param, value) != 1]
        state = "glibc, tuned (one arena, no mmap, no trim)"
        if refused:
            state = f"glibc, partly tuned (mallopt refused parameter(s) {', '.join(map(str, refused))})"
    return state
