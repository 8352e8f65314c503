"""``bpflow motifs CONFIG.json``: TF-MoDISco patterns of a contribution file, named by their
TOMTOM matches in a motif database, with logos, and the factorization check.

The step runs TF-MoDISco (the maintained ``modisco-lite`` package) on the central ``window``
bases of a contribution file's windows (:mod:`bpflow.formats.contributions`), writes its
patterns and seqlets in modisco-lite's own HDF5 layout (``PREFIX.modisco.h5``: ``modisco
report`` and other tools read it), trims each pattern to the positions that carry at least
``trim-threshold`` of its largest per-position contribution, and matches the trimmed
position probability matrix, in both orientations, against the database with TOMTOM
(``memelite.tomtom``).  q-values are Benjamini-Hochberg over the database, per pattern.

The database is the JASPAR 2024 CORE vertebrates non-redundant set shipped in
bpflow/data/motifs (CC BY 4.0), plus the user's MEME / JASPAR files, plus, for a ``bpflow
simulate`` experiment, the simulation's planted motifs and its bias motif, plus the bias
motif of the check (below).  All are scored together, so the q-values of a small user
database still have the whole database as their background (TOMTOM's p-values are not
reliable against a handful of targets).

Factorization check (``check``):

* ``residual``: a pattern whose best match among the TF and bias motifs is a bias motif with
  q below ``q-threshold`` is a QC warning: the bias-free model has learnt the enzyme's bias.
  The bias motifs are the top pattern of the bias model's own motifs run
  (``bias-motifs-json``: its informative positive pattern with the most seqlets), a
  simulation's bias motif and any the config names (``bias-motifs``).
* ``bias``: a bias-model pattern whose best such match is a TF motif with q below
  ``q-threshold`` is a QC warning: the bias model has learnt a transcription factor, which the
  residual then cannot explain.
* ``none``: patterns only (a combined model holds the bias by design).

Patterns with too little information (docs/motifs.md) are reported but neither matched nor
checked.

Outputs: ``PREFIX.modisco.h5``, ``PREFIX.tsv`` (one row per pattern: sign, seqlets, the best
three matches with q-values), ``PREFIX.meme`` (the trimmed patterns), ``PREFIX.json`` (the
summary, the check and its warnings), ``PREFIX.html`` (the table with both logos of every
pattern) and ``PREFIX.logos/<pattern>.{cwm,ic}.png``; with ``qc-output`` also a QC report
(``{"warnings": [...]}``) that the workflow's end-of-run summary reads.  docs/motifs.md.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bpflow.formats.contributions import ContributionFile
from bpflow.formats.motifs import (
    JASPAR_DATABASE,
    Motif,
    as_motif,
    load_motifs,
    read_motif_file,
    simulation_motifs,
    write_meme,
)
from bpflow.formats.sequence import BASES
from bpflow.utils import BpflowError, atomic_output, read_step_config, write_json_atomic

logger = logging.getLogger("bpflow.motifs")

BACKGROUND = np.full(4, 0.25)


@dataclass
class Pattern:
    """One TF-MoDISco pattern: ``ppm`` (L, 4) base frequencies of its seqlets, ``cwm`` (L, 4)
    their mean contributions; ``trim`` the [start, stop) kept for matching; ``matches`` the
    database hits, best first (then the check's TF and bias motifs, whatever their rank)."""

    name: str
    sign: str
    num_seqlets: int
    ppm: np.ndarray
    cwm: np.ndarray
    trim: tuple[int, int] = (0, 0)
    matches: list[dict] = field(default_factory=list)
    flagged: str = ""
    low_information: str = ""  # why the pattern is not matched (too short or too little information)

    @property
    def trimmed_ppm(self) -> np.ndarray:
        return self.ppm[self.trim[0] : self.trim[1]]

    @property
    def consensus(self) -> str:
        return "".join(BASES[i] for i in self.trimmed_ppm.argmax(axis=1))

    @property
    def mean_information(self) -> float:
        return float(information_content(self.trimmed_ppm).mean())


@dataclass(frozen=True)
class Target:
    """A database motif: ``kind`` "tf" or "bias"; ``source`` jaspar, meme, simulation, bias-model."""

    motif: Motif
    kind: str
    source: str

    @property
    def label(self) -> str:
        m = self.motif
        name = f"{m.matrix_id} {m.name}" if m.matrix_id and m.matrix_id != m.name else m.name
        return f"{name} ({self.source})"


# ----------------------------------------------------------------------------------------------
# Matrices


def trim_bounds(cwm: np.ndarray, threshold: float = 0.3, max_gap: int = 2) -> tuple[int, int]:
    """[start, stop) of the pattern's core: from the position with the largest summed absolute
    contribution, extended on each side to every position carrying at least ``threshold`` x
    that largest one, across gaps of at most ``max_gap`` weaker positions (so a pattern whose
    contributions are spread thinly over its whole width keeps only its peak, not everything
    between two stray positions).  The whole pattern when it carries no contribution."""
    score = np.abs(np.asarray(cwm, dtype=np.float64)).sum(axis=1)
    if not len(score) or score.max() <= 0:
        return 0, len(score)
    above = score >= threshold * score.max()
    start = stop = int(score.argmax())
    while True:
        left = [k for k in range(max(0, start - max_gap - 1), start) if above[k]]
        if not left:
            break
        start = left[0]
    while True:
        right = [k for k in range(stop + 1, min(len(score), stop + max_gap + 2)) if above[k]]
        if not right:
            break
        stop = right[-1]
    return start, stop + 1


def information_content(ppm: np.ndarray, background=BACKGROUND, pseudocount: float = 1e-3) -> np.ndarray:
    """(L,) bits per position: sum_b p_b log2(p_b / background_b)."""
    p = (np.asarray(ppm, dtype=np.float64) + pseudocount) / (1 + 4 * pseudocount)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * np.log2(p / np.asarray(background)[None, :])
    return np.where(p > 0, terms, 0.0).sum(axis=1)  # 0 log 0 = 0


def bh_qvalues(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values along the last axis (monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    n = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    q = np.empty_like(p)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), axis=-1)
    return q


def tomtom(queries: Sequence[np.ndarray], targets: Sequence[np.ndarray], threads: int | None = None):
    """TOMTOM of each (L, 4) query against each (W, 4) target, both orientations of the
    target: (p-values, offsets, strands "+"/"-"), each (queries, targets)."""
    import warnings

    from memelite import tomtom as _tomtom

    qs = [np.asarray(q, dtype=np.float64).T.copy() for q in queries]
    ts = [np.asarray(t, dtype=np.float64).T.copy() for t in targets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "fewer than 25 targets" warning: the caller decides
        p, _scores, offsets, _overlaps, strands = _tomtom(qs, ts, n_jobs=threads or -1)
    return p, offsets, np.where(np.asarray(strands) > 0, "-", "+")


def warm_tomtom_cache() -> None:
    """Compile TOMTOM's numba kernels into numba's on-disk cache by calling it once on a toy
    query.  After an install the first call spends about 70 s compiling (measured on the
    2-core box), later processes load the cache in about a second; ``make install`` calls
    this so that the first `bpflow motifs` of a run does not pay it."""
    toy = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    tomtom([toy], [toy, toy[::-1]], threads=1)


# ----------------------------------------------------------------------------------------------
# TF-MoDISco


def central_window(length: int, window: int | None) -> slice:
    """The central ``window`` bases of ``length`` (all of them when None or longer)."""
    if window is None or window >= length:
        return slice(0, length)
    start = (length - window) // 2
    return slice(start, start + window)


def run_modisco(sequence: np.ndarray, hypothetical: np.ndarray, cfg: dict):
    """TF-MoDISco on (n, L, 4) one-hot sequences and hypothetical contributions; returns
    modisco-lite's (positive patterns, negative patterns), each a list or None."""
    from modiscolite.tfmodisco import TFMoDISco

    return TFMoDISco(
        one_hot=np.asarray(sequence, dtype=np.float32),
        hypothetical_contribs=np.asarray(hypothetical, dtype=np.float32),
        max_seqlets_per_metacluster=cfg["max-seqlets"],
        sliding_window_size=cfg["sliding-window-size"],
        flank_size=cfg["flank-size"],
        target_seqlet_fdr=cfg["target-seqlet-fdr"],
        n_leiden_runs=cfg["leiden-runs"],
        final_min_cluster_size=cfg["min-seqlets"],
        verbose=False,
    )


def patterns_from_modisco(pos, neg, trim_threshold: float, min_information: float, min_width: int = 4):
    """modisco-lite's SeqletSets as :class:`Pattern` (names as in its HDF5:
    ``pos_patterns.pattern_0``, ...), trimmed to their cores.  A core narrower than
    ``min_width`` or with less than ``min_information`` bits per position on average is
    marked low-information: its seqlets share contributions but no sequence, so a database
    match would be chance (TOMTOM finds "significant" matches for long, flat matrices)."""
    out = []
    for group, sign, patterns in (("pos_patterns", "+", pos), ("neg_patterns", "-", neg)):
        for i, pattern in enumerate(patterns or []):
            cwm = np.asarray(pattern.contrib_scores, dtype=np.float64)
            x = Pattern(
                name=f"{group}.pattern_{i}",
                sign=sign,
                num_seqlets=len(pattern.seqlets),
                ppm=np.asarray(pattern.sequence, dtype=np.float64),
                cwm=cwm,
                trim=trim_bounds(cwm, trim_threshold),
            )
            width, bits = x.trim[1] - x.trim[0], x.mean_information
            if width < min_width or bits < min_information:
                x.low_information = f"low information ({width} bp core, {bits:.2f} bits per position)"
            out.append(x)
    return out


# ----------------------------------------------------------------------------------------------
# The database and the matches


def bias_model_motif(path) -> Motif | None:
    """The top pattern of a bias model's motifs summary (``PREFIX.json`` of this step): its
    informative positive pattern with the most seqlets, trimmed; None when it has none."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BpflowError(f"{path}: cannot read the bias model's motifs summary: {err}") from None
    if not isinstance(summary, dict) or "patterns" not in summary:
        raise BpflowError(f"{path}: not a bpflow motifs summary (no key 'patterns')")
    top = summary.get("top-pattern")
    for pattern in summary["patterns"]:
        if pattern["name"] == top:
            return as_motif(np.asarray(pattern["ppm"], dtype=np.float64), f"{top} {pattern['consensus']}")
    return None


def load_database(cfg: dict) -> list[Target]:
    """The targets: JASPAR (``database.jaspar``), MEME / JASPAR files, a simulation's motifs,
    and the check's bias motifs."""
    db = cfg["database"]
    # with a simulation's truth, its planted motifs are the TF motifs of the check and the
    # other databases only name patterns (a bias k-mer may well resemble some JASPAR motif)
    kind = "name" if db.get("simulation-truth") else "tf"
    targets: list[Target] = []
    if db["jaspar"]:
        targets += [Target(m, kind, "JASPAR 2024") for m in read_motif_file(JASPAR_DATABASE)]
    for path in db["motif-files"]:
        targets += [Target(m, kind, Path(path).name) for m in read_motif_file(path)]
    if db.get("simulation-truth"):
        tfs, bias = simulation_motifs(db["simulation-truth"])
        targets += [Target(m, "tf", "simulation") for m in tfs.values()]
        targets += [Target(m.renamed(m.consensus), "bias", "simulation bias motif") for m in bias.values()]
    if cfg.get("bias-motifs-json"):
        motif = bias_model_motif(cfg["bias-motifs-json"])
        if motif is not None:
            targets.append(Target(motif, "bias", "bias model"))
        else:
            logger.warning(
                "%s: the bias model has no informative positive pattern to check against", cfg["bias-motifs-json"]
            )
    for motif in load_motifs(cfg.get("bias-motifs", {})).values():
        targets.append(Target(motif, "bias", "config"))
    if not targets:
        raise BpflowError("key database: no motif to match against (jaspar false, no motif-files, no simulation)")
    return targets


def match_patterns(patterns: list[Pattern], targets: list[Target], top: int, threads: int | None) -> None:
    """Fill each informative pattern's ``matches`` with its best ``top`` targets (by p-value)
    plus the best TF-motif and every bias-motif target whatever their rank (for the check)."""
    patterns = [x for x in patterns if not x.low_information]
    if not patterns:
        return
    p, offsets, strands = tomtom([x.trimmed_ppm for x in patterns], [t.motif.probabilities for t in targets], threads)
    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=1.0)
    q = bh_qvalues(p)
    bias_cols = [j for j, t in enumerate(targets) if t.kind == "bias"]
    tf_cols = np.array([j for j, t in enumerate(targets) if t.kind == "tf"], dtype=np.int64)
    for i, pattern in enumerate(patterns):
        order = list(np.argsort(p[i], kind="stable")[:top])
        if len(tf_cols):
            order.append(int(tf_cols[np.argmin(p[i, tf_cols])]))
        order += bias_cols
        order = list(dict.fromkeys(order))
        pattern.matches = [
            {
                "motif": targets[j].motif.name,
                "id": targets[j].motif.matrix_id,
                "source": targets[j].source,
                "kind": targets[j].kind,
                "label": targets[j].label,
                "rank": int((p[i] < p[i, j]).sum()) + 1,
                "p": float(p[i, j]),
                "q": float(q[i, j]),
                "strand": str(strands[i, j]),
                "offset": int(offsets[i, j]),
            }
            for j in order
        ]


def factorization_check(patterns: list[Pattern], check: str, q_threshold: float, what: str) -> tuple[dict, list[str]]:
    """The check's verdict and its warnings.  Of an informative pattern's matches among the
    check's motifs (TF and bias motifs), the best one decides: a residual pattern is flagged when that is a bias motif with q below the threshold, a bias-model
    pattern when it is a TF motif with q below the threshold."""
    result = {"check": check, "q-threshold": q_threshold, "flagged": []}
    warnings = []
    if check == "none":
        result["verdict"] = "not run"
        return result, warnings
    unwanted = "bias" if check == "residual" else "tf"
    for x in patterns:
        candidates = [m for m in x.matches if m["kind"] in ("tf", "bias")]
        best = min(candidates, key=lambda m: m["p"], default=None)
        if best is not None and best["kind"] == unwanted and best["q"] < q_threshold:
            motif = "bias motif" if unwanted == "bias" else "TF motif"
            x.flagged = f"matches the {motif} {best['label']} (q {best['q']:.2g})"
            result["flagged"].append({"pattern": x.name, "num-seqlets": x.num_seqlets, "reason": x.flagged})
            warnings.append(f"{what}: pattern {x.name} ({x.num_seqlets} seqlets, {x.consensus}) {x.flagged}")
    informative = [x for x in patterns if not x.low_information]
    if not informative:
        result["verdict"] = "pass (no informative pattern)"
    elif not any(m["kind"] == unwanted for x in informative for m in x.matches):
        result["verdict"] = f"not run (no {'bias' if unwanted == 'bias' else 'TF'} motif to check against)"
    else:
        result["verdict"] = "fail" if result["flagged"] else "pass"
    return result, warnings


# ----------------------------------------------------------------------------------------------
# Outputs


def draw_logo(matrix: np.ndarray, path, title: str, ylabel: str) -> None:
    """A sequence logo of an (L, 4) matrix (letter heights: the values) as PNG."""
    import logomaker
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(np.asarray(matrix, dtype=np.float64), columns=list("ACGT"))
    fig, ax = plt.subplots(figsize=(max(3.0, 0.25 * len(frame) + 1), 1.8))
    logomaker.Logo(frame, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def logo_paths(prefix: str, pattern: Pattern) -> tuple[Path, Path]:
    base = Path(f"{prefix}.logos") / pattern.name.replace(".", "_")
    return base.with_name(base.name + ".cwm.png"), base.with_name(base.name + ".ic.png")


def draw_logos(prefix: str, patterns: list[Pattern]) -> None:
    for x in patterns:
        cwm_path, ic_path = logo_paths(prefix, x)
        a, b = x.trim
        draw_logo(x.cwm[a:b], cwm_path, f"{x.name}: {x.num_seqlets} seqlets (contribution)", "contribution")
        ppm = x.ppm[a:b]
        draw_logo(ppm * information_content(ppm)[:, None], ic_path, f"{x.name} (information content)", "bits")


def write_table(path, patterns: list[Pattern], top: int) -> None:
    header = ["pattern", "sign", "num-seqlets", "consensus", "flag"]
    for k in range(1, top + 1):
        header += [f"match{k}", f"q{k}"]
    lines = ["\t".join(header)]
    for x in patterns:
        row = [x.name, x.sign, str(x.num_seqlets), x.consensus, x.flagged or x.low_information or "-"]
        ranked = x.matches[:top]  # the best by p-value come first
        for k in range(top):
            row += [ranked[k]["label"], f"{ranked[k]['q']:.3g}"] if k < len(ranked) else ["-", "-"]
        lines.append("\t".join(row))
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-height:110px">'


def write_html(path, prefix: str, summary: dict, patterns: list[Pattern], top: int) -> None:
    check = summary["check"]
    verdict = check["verdict"]
    colour = {"pass": "green", "fail": "red"}.get(verdict, "grey")
    rows = []
    for x in patterns:
        cwm_path, ic_path = logo_paths(prefix, x)
        matches = "<br>".join(html.escape(f"{m['label']} q={m['q']:.2g}") for m in x.matches[:top])
        matches = matches or html.escape(x.low_information or "-")
        flag = f'<span style="color:red">{html.escape(x.flagged)}</span>' if x.flagged else ""
        rows.append(
            f"<tr><td>{html.escape(x.name)}</td><td>{x.sign}</td><td>{x.num_seqlets}</td>"
            f"<td>{_img(cwm_path)}<br>{_img(ic_path)}</td><td>{matches}</td><td>{flag}</td></tr>"
        )
    text = (
        "<html><body style='font-family:sans-serif'>"
        f"<h3>TF-MoDISco patterns: {html.escape(summary['model'])} model, head {html.escape(summary['head'])}, "
        f"target {html.escape(summary['target'])}</h3>"
        f"<p>{summary['num-windows']} windows ({summary['window']} central bases), {len(patterns)} patterns; "
        f"database: {html.escape(', '.join(summary['database']['sources']))} ({summary['database']['num-motifs']} "
        f"motifs).<br>Factorization check ({html.escape(check['check'])}, q &lt; {check['q-threshold']}): "
        f"<b style='color:{colour}'>{html.escape(verdict)}</b></p>"
        "<table border=1 cellpadding=4 style='border-collapse:collapse'><tr><th>pattern</th><th>sign</th>"
        "<th>seqlets</th><th>logos (contribution, information content)</th><th>best matches (TOMTOM q)</th>"
        f"<th>check</th></tr>{''.join(rows)}</table></body></html>\n"
    )
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def _save_modisco(path, pos, neg, window: int) -> None:
    from modiscolite.io import save_hdf5

    with atomic_output(path) as tmp:
        save_hdf5(str(tmp), pos, neg, window)


# ----------------------------------------------------------------------------------------------
# The step


def run_motifs_config(cfg: dict, threads: int | None = None) -> dict:
    """Run the step of a validated config; returns the summary (also written as PREFIX.json)."""
    started = time.perf_counter()
    prefix = cfg["output-prefix"]
    targets = load_database(cfg)  # before the slow part: a bad database path fails at once
    with ContributionFile(cfg["contributions-file"]) as cf:
        attrs = cf.attrs
        n = cf.num_samples
        if cfg["max-windows"] is not None and n > cfg["max-windows"]:
            rows = np.sort(np.random.default_rng(cfg["seed"]).choice(n, cfg["max-windows"], replace=False))
        else:
            rows = slice(None)  # all of them: one contiguous read, not a point selection
        cut = central_window(cf.input_length, cfg["window"])
        sequence = cf.sequence(rows)[:, cut]
        hypothetical = cf.hypothetical(rows)[:, cut]
    what = f"motifs of the {cfg['model']} model ({attrs.get('head', '')}, {attrs.get('target', '')})"
    logger.info(
        "%s: TF-MoDISco on %d windows x %d bases (up to %d seqlets per sign)",
        cfg["contributions-file"],
        sequence.shape[0],
        sequence.shape[1],
        cfg["max-seqlets"],
    )
    pos, neg = run_modisco(sequence, hypothetical, cfg)
    patterns = patterns_from_modisco(pos, neg, cfg["trim-threshold"], cfg["min-information"])
    logger.info(
        "%d positive and %d negative patterns (%.0f s)",
        len(pos or []),
        len(neg or []),
        time.perf_counter() - started,
    )
    match_patterns(patterns, targets, cfg["top-matches"], threads)
    check, warnings = factorization_check(patterns, cfg["check"], cfg["q-threshold"], what)
    positives = [x for x in patterns if x.sign == "+" and not x.low_information]
    summary = {
        "contributions-file": cfg["contributions-file"],
        "model": cfg["model"],
        "head": str(attrs.get("head", "")),
        "target": str(attrs.get("target", "")),
        "num-windows": int(sequence.shape[0]),
        "window": int(sequence.shape[1]),
        "database": {
            "sources": sorted({t.source for t in targets}),
            "num-motifs": len(targets),
            "bias-motifs": [t.label for t in targets if t.kind == "bias"],
        },
        "top-pattern": max(positives, key=lambda x: x.num_seqlets).name if positives else None,
        "patterns": [
            {
                "name": x.name,
                "sign": x.sign,
                "num-seqlets": x.num_seqlets,
                "trim": list(x.trim),
                "consensus": x.consensus,
                "ppm": x.trimmed_ppm.round(5).tolist(),
                "mean-information": round(x.mean_information, 3),
                "low-information": x.low_information,
                "matches": x.matches,
                "flag": x.flagged,
            }
            for x in patterns
        ],
        "check": check,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _save_modisco(f"{prefix}.modisco.h5", pos, neg, int(sequence.shape[1]))
    draw_logos(prefix, patterns)
    write_table(f"{prefix}.tsv", patterns, cfg["top-matches"])
    write_meme(
        f"{prefix}.meme",
        [as_motif(x.trimmed_ppm, x.name) for x in patterns],
    )
    write_html(f"{prefix}.html", prefix, summary, patterns, cfg["top-matches"])
    write_json_atomic(f"{prefix}.json", summary)
    if cfg.get("qc-output"):
        write_json_atomic(cfg["qc-output"], {"stage": "motifs", "what": what, "check": check, "warnings": warnings})
    for line in warnings:
        logger.warning("QC: %s", line)
    logger.info(
        "%s: %d patterns, check %s (%s); %s.{json,tsv,html,meme,modisco.h5}",
        what,
        len(patterns),
        check["check"],
        check["verdict"],
        prefix,
    )
    return summary


def main(argv: Sequence[str]) -> int:
    path, cfg, options = read_step_config(
        argv, "motifs", "TF-MoDISco patterns, TOMTOM matches and the factorization check.", "docs/motifs.md"
    )
    if options.threads:
        import numba

        numba.set_num_threads(min(options.threads, numba.config.NUMBA_NUM_THREADS))
    run_motifs_config(cfg, options.threads)
    return 0
