"""The HDF5 batch pipeline (bpflow.batcher.H5Batcher) against known answers."""

import tracemalloc

import h5py
import numpy as np
import pytest

from bpflow.formats.sequence import revcomp_task_order
from bpflow.train import batcher as batcher_module
from bpflow.train.batcher import H5Batcher
from bpflow.utils import BpflowError

from train_helpers import one_hot, synthetic_arrays, write_h5

IN, OUT = 30, 12


def position_file(path, n, jitter, in_len=IN, out_len=OUT, tasks=2, **kw):
    """Profiles encode (sample, position, task) as 1000*i + p + 0.25*t (p: position in the stored
    profile row); the sequence at stored position q is base (q + i) % 4."""
    seq_w, prof_w = in_len + 2 * jitter, out_len + 2 * jitter
    i = np.arange(n)[:, None]
    seq = one_hot((np.arange(seq_w)[None, :] + i) % 4)
    prof = 1000.0 * i[:, :, None] + np.arange(prof_w)[None, :, None] + 0.25 * np.arange(tasks)[None, None, :]
    prof = np.broadcast_to(prof, (n, prof_w, tasks))
    return write_h5(path, seq, [prof], **kw)


def decode(x_row, prof_row, file_jitter, train_jitter):
    """Sample id and offset from a (forward) profile window; check that the sequence matches."""
    first = prof_row[0, 0]
    sample = int(first // 1000)
    start = int(round(first - 1000 * sample))  # stored profile position of the window
    offset = start - (file_jitter - train_jitter)  # jitter offset 0..2J
    s0 = file_jitter - train_jitter + offset  # stored sequence position of the window
    expected = np.eye(4)[(s0 + np.arange(x_row.shape[0]) + sample) % 4]
    np.testing.assert_array_equal(x_row, expected)
    return sample, offset


def all_batches(b, epoch):
    b.set_epoch(epoch)
    return [b[i] for i in range(len(b))]


def test_jitter_keeps_sequence_and_profile_aligned(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=40, jitter=5)
    b = H5Batcher(path, [2], IN, OUT, batch_size=8, max_jitter=3, shuffle=True, seed=7)
    offsets = []
    for epoch in range(6):
        seen = []
        for x, y in all_batches(b, epoch):
            profile, counts = y
            assert x.dtype == np.float32 and x.shape[1:] == (IN, 4)
            assert profile.shape[1:] == (OUT, 2)
            for k in range(len(x)):
                sample, offset = decode(x[k], profile[k], file_jitter=5, train_jitter=3)
                # the profile window is contiguous and both tasks are the same window
                expected = (1000 * sample + (5 - 3 + offset) + np.arange(OUT))[:, None] + 0.25 * np.arange(2)
                np.testing.assert_array_equal(profile[k], expected)
                assert counts[k, 0] == pytest.approx(np.log1p(expected.sum()), rel=1e-6)
                seen.append(sample)
                offsets.append(offset)
        assert sorted(seen) == list(range(40))  # every sample exactly once per epoch
    # offsets cover 0..2J inclusive and nothing else
    assert set(offsets) == set(range(7))


def test_validation_windows_are_centered_in_a_wider_file(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=10, jitter=6)
    b = H5Batcher(path, [2], IN, OUT, batch_size=4, sample_weights=True)
    ids = []
    for x, y, w in all_batches(b, 0):
        for k in range(len(x)):
            sample, offset = decode(x[k], y[0][k], file_jitter=6, train_jitter=0)
            assert offset == 0
            ids.append(sample)
    assert ids == list(range(10))  # file order


def test_reverse_complement_on_the_fly(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=32, jitter=2)
    fwd = H5Batcher(path, [2], IN, OUT, batch_size=32, max_jitter=2, shuffle=True, seed=3)
    rc = H5Batcher(path, [2], IN, OUT, batch_size=32, max_jitter=2, shuffle=True, seed=3, reverse_complement=True)
    for epoch in range(2):
        order, offsets, flips = rc.epoch_plan(epoch)
        assert 0 < flips.sum() < len(flips)
        ((xf, yf),) = all_batches(fwd, epoch)  # same seed: same order and offsets
        ((xr, yr),) = all_batches(rc, epoch)
        for k in range(32):
            if flips[k]:
                # A<->T, C<->G and reversed; strand tasks swap (auto order [1, 0])
                np.testing.assert_array_equal(xr[k], xf[k][::-1, ::-1])
                np.testing.assert_array_equal(yr[0][k], yf[0][k][::-1, ::-1])
            else:
                np.testing.assert_array_equal(xr[k], xf[k])
                np.testing.assert_array_equal(yr[0][k], yf[0][k])
            assert yr[1][k] == yf[1][k]  # total counts unchanged


def test_reverse_complement_task_order_permutation(tmp_path):
    n, tasks = 8, 3
    path = position_file(tmp_path / "pos.h5", n=n, jitter=0, tasks=tasks)
    b = H5Batcher(path, [tasks], IN, OUT, batch_size=n, reverse_complement=True, revcomp_orders=[[2, 0, 1]])
    order, _, flips = b.epoch_plan(0)
    ((x, (prof, _)),) = all_batches(b, 0)
    plain = np.asarray(h5py.File(path)["head_0"])
    for k in np.flatnonzero(flips):
        fwd = plain[order[k]]
        # forward task i becomes task order[i] of the reverse complement
        for i, j in enumerate([2, 0, 1]):
            np.testing.assert_array_equal(prof[k][:, j], fwd[::-1, i])
    assert flips.any()
    with pytest.raises(BpflowError, match="permutation"):
        revcomp_task_order([0, 0, 1], 3, "x")
    with pytest.raises(BpflowError, match="needs 1 or 2 tasks"):
        revcomp_task_order("auto", 3, "x")


def test_epochs_are_reshuffled_reproducibly(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=50, jitter=2)
    a = H5Batcher(path, [2], IN, OUT, batch_size=10, max_jitter=2, shuffle=True, seed=1)
    b = H5Batcher(path, [2], IN, OUT, batch_size=10, max_jitter=2, shuffle=True, seed=1)
    c = H5Batcher(path, [2], IN, OUT, batch_size=10, max_jitter=2, shuffle=True, seed=2)
    o0, j0, _ = a.epoch_plan(0)
    o1, _, _ = a.epoch_plan(1)
    assert sorted(o0) == list(range(50)) and sorted(o1) == list(range(50))
    assert not np.array_equal(o0, o1)
    assert not np.array_equal(o0, c.epoch_plan(0)[0])
    # a batch is a pure function of (seed, epoch, index): any order, any instance
    b.set_epoch(3)
    late = b[4]
    a.set_epoch(0)
    a[0]
    a.set_epoch(3)
    again = a[4]
    np.testing.assert_array_equal(late[0], again[0])
    np.testing.assert_array_equal(late[1][0], again[1][0])


def test_batch_sizes_follow_the_device_count(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=23, jitter=0)
    train = H5Batcher(path, [2], IN, OUT, batch_size=8, shuffle=True, batch_multiple=2)
    assert [len(train[i][0]) for i in range(len(train))] == [8, 8, 6]  # 7 left over -> 6
    val = H5Batcher(path, [2], IN, OUT, batch_size=8, batch_multiple=2, sample_weights=True)
    batches = all_batches(val, 0)
    assert [len(bt[0]) for bt in batches] == [8, 8, 8]  # 7 left over, padded to 8
    x, y, w = batches[-1]
    np.testing.assert_array_equal(w, [1] * 7 + [0])
    np.testing.assert_array_equal(x[7], x[0])  # padding repeats a real sample, weight 0
    assert sum(bt[2].sum() for bt in batches) == 23
    with pytest.raises(BpflowError, match="cannot be split over 4 devices"):
        H5Batcher(position_file(tmp_path / "three.h5", n=3, jitter=0), [2], IN, OUT, batch_size=8, batch_multiple=4)


def test_two_level_shuffle_when_the_data_exceed_the_cache(tmp_path):
    n, rows = 400, 10
    path = position_file(tmp_path / "pos.h5", n=n, jitter=2, chunks=rows, compression="gzip")
    # 400 samples x 16 x 2 x 4 bytes = 51 kB of profiles: a cache of 1 MiB holds them all
    full = H5Batcher(path, [2], IN, OUT, batch_size=20, max_jitter=2, shuffle=True, cache_mb=1)
    assert full._blocks is None
    # a 24 kB cache per dataset: windows of 24576 // (2 * 10 * 128) = 9 chunks
    small = H5Batcher(path, [2], IN, OUT, batch_size=20, max_jitter=2, shuffle=True, cache_mb=1)
    small._cache_per_dataset = 24576
    small._blocks, small._window = small._shuffle_layout()
    assert small._window == 9 and len(small._blocks) == 40
    for epoch in range(2):
        order, _, _ = small.epoch_plan(epoch)
        assert sorted(order) == list(range(n))  # still every sample once
        # each window of 9 chunks (90 samples) is a permutation of those chunks' samples
        for w in range(0, n, 90):
            chunks = set(order[w : w + 90] // rows)
            assert len(chunks) == min(9, (n - w) // rows)
        # batches hold the right data
        small.set_epoch(epoch)
        x, (prof, _) = small[3]
        for k in range(len(x)):
            decode(x[k], prof[k], file_jitter=2, train_jitter=2)


def test_memory_stays_at_the_sequence_plus_a_batch(tmp_path, monkeypatch):
    n, in_len, out_len = 200, 40, 2000
    rng = np.random.default_rng(0)
    seq = one_hot(rng.integers(0, 4, size=(n, in_len)))
    prof = rng.poisson(0.5, size=(n, out_len, 2)).astype(np.float32)  # 3.2 MB of profiles
    path = write_h5(tmp_path / "big.h5", seq, [prof], chunks=20, compression="gzip")
    monkeypatch.setattr(batcher_module, "_SCAN_BLOCK_BYTES", 1 << 18)
    tracemalloc.start()
    try:
        b = H5Batcher(path, [2], in_len, out_len, batch_size=8, shuffle=True)
        stats = b.scan()
        for i in range(len(b)):
            b[i]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = 8 * out_len * 2 * 4
    assert peak < seq.nbytes + 20 * batch_bytes + (1 << 20)  # far below the 3.2 MB of profiles
    assert peak < prof.nbytes / 2
    totals = prof.sum(axis=(1, 2))
    assert stats[0].mean_total == pytest.approx(totals.mean())
    assert stats[0].median_total == pytest.approx(np.median(totals))
    b.close()


def test_scan_statistics_use_the_central_window(tmp_path):
    seq, prof = synthetic_arrays(30, IN + 8, OUT + 8, num_tasks=2, seed=5)
    path = write_h5(tmp_path / "s.h5", seq, [prof])
    stats = H5Batcher(path, [2], IN, OUT, batch_size=8, max_jitter=2).scan()[0]
    totals = prof[:, 4 : 4 + OUT, :].sum(axis=(1, 2))
    assert stats.num_samples == 30
    assert stats.mean_total == pytest.approx(totals.mean())
    assert stats.zero_windows == int((totals == 0).sum())


def test_several_files_are_concatenated(tmp_path):
    a = position_file(tmp_path / "a.h5", n=6, jitter=1)
    b = position_file(tmp_path / "b.h5", n=5, jitter=3)  # a wider file: centered windows
    data = H5Batcher([a, b], [2], IN, OUT, batch_size=4, sample_weights=True)
    assert data.num_samples == 11
    got = []
    for x, y, w in all_batches(data, 0):
        for k in range(int(w.sum())):
            got.append(decode(x[k], y[0][k], file_jitter=1 if len(got) < 6 else 3, train_jitter=0))
    assert [s for s, _ in got] == list(range(6)) + list(range(5))


@pytest.mark.parametrize(
    "problem, message",
    [
        ("nan", "NaN or infinite values \\(first in sample 3\\)"),
        ("negative", "negative values \\(first in sample 2"),
    ],
)
def test_scan_rejects_bad_values(tmp_path, problem, message):
    seq, prof = synthetic_arrays(6, IN, OUT, seed=1)
    if problem == "nan":
        prof[3, 5, 1] = np.nan
    else:
        prof[2, 0, 0] = -1
    path = write_h5(tmp_path / "bad.h5", seq, [prof])
    with pytest.raises(BpflowError, match=message):
        H5Batcher(path, [2], IN, OUT, batch_size=4).scan()


def test_shape_errors_name_the_file_and_dataset(tmp_path):
    path = position_file(tmp_path / "pos.h5", n=4, jitter=2)
    with pytest.raises(BpflowError, match="allow a jitter of at most 2 .* max-jitter is 3"):
        H5Batcher(path, [2], IN, OUT, batch_size=4, max_jitter=3)
    with pytest.raises(BpflowError, match="'head_0' has 2 task\\(s\\) but the config's head 0 has num-tasks 1"):
        H5Batcher(path, [1], IN, OUT, batch_size=4)
    with pytest.raises(BpflowError, match="no 'head_1' dataset"):
        H5Batcher(path, [2, 1], IN, OUT, batch_size=4)
    with pytest.raises(BpflowError, match="cannot center-crop"):
        H5Batcher(path, [2], IN + 1, OUT, batch_size=4)
    with pytest.raises(BpflowError, match="file not found"):
        H5Batcher(tmp_path / "missing.h5", [2], IN, OUT, batch_size=4)
