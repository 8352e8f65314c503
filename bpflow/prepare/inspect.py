"""``bpflow inspect-data FILE.h5``: shapes, counts and the reverse-complement pairing of a
training dataset (bpflow's or BPReveal's)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from bpflow.formats.dataset import TrainingDataset


def _infer_order(fwd: np.ndarray, rev: np.ndarray) -> list[int] | None:
    """The task permutation p with rev[:, p[i]] == flip(fwd[:, i]), if any (<= 4 tasks)."""
    tasks = fwd.shape[-1]
    if tasks > 4:
        return None
    flipped = fwd[::-1]
    for perm in itertools.permutations(range(tasks)):
        if all(np.array_equal(rev[:, perm[i]], flipped[:, i]) for i in range(tasks)):
            return list(perm)
    return None


def _bad_value(name: str, arr: np.ndarray, s0: int, negative: bool = True) -> str | None:
    """A problem line for the first NaN / infinite (or, with ``negative``, negative) value of
    a block of samples starting at sample ``s0``, naming the dataset and index; else None."""
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return None
    finite = np.isfinite(arr.sum(dtype=np.float64))  # float32 sums cannot overflow float64
    bad = ~np.isfinite(arr) if not finite else (arr < 0 if negative and arr.min() < 0 else None)
    if bad is None:
        return None
    first = np.argwhere(bad)[0]
    index = (s0 + int(first[0]),) + tuple(int(i) for i in first[1:])
    value = float(arr[tuple(first)])
    what = "not a finite number" if not finite else "negative (counts cannot be)"
    where = ", ".join(str(i) for i in index)
    fields = ("sample", "position", "task")
    named = ", ".join(f"{f} {i}" for f, i in zip(fields, index)) if arr.ndim == 3 and name != "sequence" else ""
    return f"{name}[{where}] is {value:g}: {what}" + (f" ({named})" if named else "") + "; training refuses this file"


def inspect_data(path: str | Path, block: int = 1024) -> dict:
    """Shapes, counts and a reverse-complement pairing check of a training HDF5 (bpflow's or
    BPReveal's), reading it in blocks of samples.

    ``reverse_complement["status"]`` is ``"ok"`` (every pair 2k/2k+1 is an exact reverse
    complement, tasks swapped as recorded or inferred), ``"not-paired"`` (the file says it has
    no pairs, or its first pair is not one) or ``"broken"`` (some pairs are wrong).

    A NaN, infinite or negative value in a head (or a NaN / infinite one in a floating-point
    sequence) is a problem naming the dataset and the index of its first such value.
    """
    with TrainingDataset(path) as data:
        f, seq, n = data.file, data.sequence, data.num_samples
        heads = [f"head_{i}" for i in range(data.num_heads)]
        problems = []
        for name in heads:
            if f[name].ndim != 3 or f[name].shape[0] != n:
                problems.append(f"{name} has shape {f[name].shape}, expected ({n}, length, tasks)")
        meta = data.metadata
        config = meta.get("config")
        jitter = output_length = None
        revcomp = orders = None
        if isinstance(config, dict):
            jitter, output_length = config.get("max-jitter"), config.get("output-length")
            revcomp = config.get("reverse-complement")
            orders = [h.get("revcomp-task-order") for h in config.get("heads", [])]
        report = {
            "path": str(data.path),
            "num_samples": n,
            "sequence": {"shape": list(seq.shape), "dtype": str(seq.dtype)},
            "heads": [],
            "coordinates": all(k in f for k in ("chrom_names", "coords_chrom", "coords_start", "coords_stop")),
            "metadata": {k: (v.item() if hasattr(v, "item") else v) for k, v in meta.items() if k != "config"},
            "problems": problems,
        }
        if problems:
            report["reverse_complement"] = {"status": "not-checked"}
            return report
        task_totals = [np.zeros(f[h].shape[2], dtype=np.float64) for h in heads]
        window_counts = [[] for _ in heads]
        # Reverse-complement check state.
        check = revcomp is not False and n >= 2
        status, bad_pairs, first_bad, checked = "ok", 0, None, 0
        inferred: list[list[int] | None] = list(orders) if orders and revcomp else [None] * len(heads)
        step = max(2, block - block % 2)
        bad_values: dict[str, str] = {}  # dataset -> its first bad value
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            sq = seq[s0:s1]
            hv = [f[h][s0:s1] for h in heads]
            for name, arr, negative in [("sequence", sq, False)] + [(h, a, True) for h, a in zip(heads, hv)]:
                if name not in bad_values:
                    problem = _bad_value(name, arr, s0, negative)
                    if problem:
                        bad_values[name] = problem
            for k, arr in enumerate(hv):
                task_totals[k] += arr.sum(axis=(0, 1), dtype=np.float64)
                if jitter is not None and output_length is not None:
                    fwd = arr[0::2] if revcomp else arr
                    window_counts[k].append(fwd[:, jitter : jitter + output_length].sum(axis=(1, 2), dtype=np.float64))
            if not check:
                continue
            if s0 == 0 and revcomp is None:
                # No metadata (e.g. a BPReveal file): is the first pair a reverse complement?
                if not np.array_equal(sq[1], sq[0][::-1, ::-1]):
                    check, status = False, "not-paired"
                    continue
            npairs = (s1 - s0) // 2
            for p in range(npairs):
                a, b = 2 * p, 2 * p + 1
                ok = np.array_equal(sq[b], sq[a][::-1, ::-1])
                for k in range(len(heads)):
                    if not ok:
                        break
                    if inferred[k] is None:
                        # Without metadata, learn the task order from the first pair with signal.
                        if not hv[k][a].any():
                            ok = not hv[k][b].any()
                            continue
                        inferred[k] = _infer_order(hv[k][a], hv[k][b]) or list(range(hv[k].shape[2]))
                    order = inferred[k]
                    flipped = hv[k][a][::-1]
                    ok = all(np.array_equal(hv[k][b][:, order[t]], flipped[:, t]) for t in range(len(order)))
                checked += 1
                if not ok:
                    bad_pairs += 1
                    if first_bad is None:
                        first_bad = (s0 + a) // 2
        problems.extend(bad_values.values())
        if check and n % 2:
            status = "broken"
            problems.append(f"{n} samples is odd, but the file should hold reverse-complement pairs")
        if check and bad_pairs:
            status = "broken"
        if revcomp is False or n < 2:
            status = "not-paired"
        report["reverse_complement"] = {
            "status": status,
            "pairs_checked": checked,
            "bad_pairs": bad_pairs,
            "first_bad_pair": first_bad,
            "task_orders": inferred if status != "not-paired" else None,
            "from_metadata": revcomp is not None,
        }
        for k, name in enumerate(heads):
            entry = {
                "name": name,
                "shape": list(f[name].shape),
                "dtype": str(f[name].dtype),
                "total_counts": float(task_totals[k].sum()),
                "task_totals": task_totals[k].tolist(),
                "mean_counts_per_sample": float(task_totals[k].sum() / n) if n else 0.0,
            }
            if window_counts[k]:
                wc = np.concatenate(window_counts[k])
                entry["output_window_counts"] = {
                    "regions": int(len(wc)),
                    "total": float(wc.sum()),
                    "mean": float(wc.mean()),
                    "median": float(np.median(wc)),
                    "min": float(wc.min()),
                    "max": float(wc.max()),
                    "zero_count_regions": int((wc == 0).sum()),
                }
            report["heads"].append(entry)
        if "chrom_names" in f:
            report["chromosomes"] = [c.decode() if isinstance(c, bytes) else str(c) for c in f["chrom_names"][:]]
    return report


def _format_report(r: dict) -> str:
    lines = [
        f"{r['path']}",
        f"  samples: {r['num_samples']}",
        f"  sequence: shape {tuple(r['sequence']['shape'])} {r['sequence']['dtype']}",
    ]
    for h in r["heads"]:
        lines.append(
            f"  {h['name']}: shape {tuple(h['shape'])} {h['dtype']}; total counts {h['total_counts']:.6g} "
            f"(per task {', '.join(f'{x:.6g}' for x in h['task_totals'])}; "
            f"mean per sample {h['mean_counts_per_sample']:.6g})"
        )
        w = h.get("output_window_counts")
        if w:
            lines.append(
                f"    output window, forward samples: {w['regions']} regions, mean {w['mean']:.6g}, "
                f"median {w['median']:.6g}, min {w['min']:.6g}, max {w['max']:.6g}, "
                f"{w['zero_count_regions']} with zero counts"
            )
    lines.append(
        f"  coordinates: {'yes' if r['coordinates'] else 'no'}"
        + (f" ({len(r['chromosomes'])} chromosomes)" if r.get("chromosomes") else "")
    )
    rc = r["reverse_complement"]
    if rc["status"] == "ok":
        lines.append(
            f"  reverse-complement pairs: OK ({rc['pairs_checked']} pairs checked; task orders "
            f"{rc['task_orders']}{'' if rc['from_metadata'] else ', inferred'})"
        )
    elif rc["status"] == "broken":
        lines.append(
            f"  reverse-complement pairs: BROKEN ({rc['bad_pairs']} of {rc['pairs_checked']} pairs are "
            f"not reverse complements; first bad pair: region {rc['first_bad_pair']}, samples "
            f"{2 * (rc['first_bad_pair'] or 0)}/{2 * (rc['first_bad_pair'] or 0) + 1})"
        )
    else:
        lines.append(f"  reverse-complement pairs: {rc['status']}")
    for p in r["problems"]:
        lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bpflow inspect-data",
        description="Print shapes, sample count and total counts per head of a training HDF5 and check "
        "its reverse-complement pairing.  Exit code 1 when a check fails.",
    )
    parser.add_argument("file", help="training HDF5 (bpflow prepare-data or BPReveal prepareTrainingData)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = inspect_data(args.file)
    print(json.dumps(report, indent=2) if args.json else _format_report(report))
    failed = report["problems"] or report["reverse_complement"]["status"] == "broken"
    if failed:
        rc = report["reverse_complement"]
        first = (
            report["problems"][0]
            if report["problems"]
            else f"reverse-complement pairs are broken ({rc['bad_pairs']} of {rc['pairs_checked']} pairs; "
            f"first bad pair: region {rc['first_bad_pair']})"
        )
        more = len(report["problems"]) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''}, listed above)" if more > 0 else ""
        print(f"bpflow inspect-data: error: {args.file}: {first}{extra}", file=sys.stderr)
    return 1 if failed else 0
