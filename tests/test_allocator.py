"""bpflow.allocator: glibc's malloc keeps what it gets in a model step's process."""

import os
import platform
import subprocess
import sys

import pytest

from bpflow import allocator, cli

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A worker thread (as XLA's and TensorFlow's are) allocates, writes and frees the same large
# block again and again; the minor page faults counted are the pages the kernel had to
# zero-fill for it.  With glibc's defaults each round maps the block afresh; tuned, the heap
# keeps it, so only the first round faults.
_ROUNDS = 8
_SIZE = 64 << 20
_PROBE = f"""
import ctypes, resource, sys, threading
from bpflow import allocator
if sys.argv[1] == "tuned":
    print(allocator.tune_malloc({{}}))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def work():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({_ROUNDS}):
        p = libc.malloc({_SIZE})
        ctypes.memset(p, 1, {_SIZE})
        libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(faults[0])
"""


def _faults(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in (allocator.ENV, "LD_PRELOAD")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    return int(lines[-2]), lines[0]


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuned_malloc_reuses_a_freed_block_instead_of_faulting_it_in_again():
    pages = _SIZE // os.sysconf("SC_PAGE_SIZE")
    plain, _ = _faults("plain")
    tuned, state = _faults("tuned")
    assert state == "glibc, tuned (one arena, no mmap, no trim)"
    # defaults: every round faults the block in again (fewer faults where transparent huge
    # pages back it, but as many rounds' worth); tuned: the first round only
    assert plain > 0.75 * _ROUNDS * tuned
    assert tuned < 1.25 * pages


def test_bpflow_malloc_system_keeps_the_defaults(monkeypatch):
    monkeypatch.setattr(allocator, "state", allocator.state)  # restored afterwards
    state = allocator.tune_malloc({allocator.ENV: "system"})
    assert state == f"glibc defaults ({allocator.ENV}=system)"
    assert allocator.state == state


def test_the_cli_tunes_malloc_for_model_steps_only(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(1))
    missing = str(tmp_path / "missing.json")
    assert cli.main(["predict", missing]) != 0  # a model step: tuned, then the config error
    assert calls == [1]
    assert cli.main(["prepare-regions", missing]) != 0  # a data step: untouched
    assert calls == [1]


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "state", allocator.state)
    env = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
    assert allocator.tune_malloc(env) == "preloaded (libtcmalloc_minimal.so.4)"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_refused_setting_is_reported_and_the_others_still_applied(monkeypatch):
    monkeypatch.setattr(allocator, "state", allocator.state)
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append(param)
            return 0 if param == allocator.M_ARENA_MAX else 1

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: FakeLibc())
    state = allocator.tune_malloc({})
    assert state == f"glibc, partly tuned (mallopt refused parameter(s) {allocator.M_ARENA_MAX})"
    assert calls == [param for param, _ in allocator.SETTINGS]
