"""``bpflow simulate``: a synthetic genome with base-resolution data whose truth is known.

The model (per strand ``s`` and base ``x``; see docs/simulate.md)::

    rate_s(x)     = depth * bias_s(x) * (1 + signal_s(x))
    observed_s(x) ~ Poisson(rate_s(x))
    control_s(x)  ~ Poisson(control_depth * bias_s(x))

* ``bias`` is an enzyme cut-rate multiplier that acts everywhere: ``exp`` of an additive
  (PWM-like) score of the k-mer around the cut, normalised so its genome-wide mean is about
  1, times ``bias-motif-factor`` where a short "bias motif" sits at a fixed offset from the
  cut.  The minus strand reads the reverse-complement context, so the minus-strand bias of a
  genome is the plus-strand bias of its reverse complement, mirrored.
* ``signal`` is the bias-free ChIP-nexus-like footprint of planted transcription-factor
  sites (0 away from sites): a sharp plus-strand peak upstream of each site, a sharp
  minus-strand peak downstream of it, at motif-specific offsets, plus a broad low component.
  A site's strength follows its PWM log-odds score (so counts are predictable from
  sequence) with optional unexplained noise.

Everything is deterministic given the seed: each part (genome, bias, sites, counts, ...)
draws from its own random stream, so changing e.g. the depth leaves the genome unchanged.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpflow import schemas
from bpflow.formats.bigwig import add_track, bigwig_writers
from bpflow.formats.motifs import BUILTIN_FILES, Motif, builtin_key, builtin_motifs, motif_from_file
from bpflow.formats.sequence import BASES, CODE_LETTERS, N_CODE, decode, encode, reverse_complement_codes
from bpflow.utils import (
    BpflowError,
    atomic_output,
    load_json_config,
    progress,
    setup_logging,
    step_parser,
    write_json_atomic,
)

logger = logging.getLogger("bpflow.simulate")

TRUTH_FORMAT_VERSION = 1

# The built-in motifs' own footprint and strength settings (they come before the schema's
# motif defaults; a config's motif entry overrides both).
BUILTIN_SETTINGS: dict[str, dict] = {
    "CTCF": {"footprint-offsets": [20, 15], "footprint-sigma": 2.5, "strength-median": 3000.0},
    "Oct4-Sox2": {"footprint-offsets": [12, 12], "footprint-sigma": 3.0, "strength-median": 2000.0},
    "Klf4": {"footprint-offsets": [7, 12], "footprint-sigma": 2.0, "strength-median": 1500.0},
}

# ---------------------------------------------------------------------------------------
# Configuration: defaults, presets, schema
# ---------------------------------------------------------------------------------------


def _motifs(num_sites: int) -> list[dict]:
    return [{"name": name, "num-sites": num_sites} for name in BUILTIN_SETTINGS]


PRESETS: dict[str, dict] = {
    # seconds: a CI-sized run of the whole workflow
    "ci": {
        "chromosome-lengths": [200_000, 200_000, 200_000],
        "motifs": _motifs(80),
        "splits": {"train": ["chr1"], "val": ["chr2"], "test": ["chr3"]},
    },
    # the README's demo: enough peaks to train small models in minutes on 2 CPU cores
    "demo": {
        "chromosome-lengths": [1_000_000, 900_000, 800_000, 700_000, 600_000],
        "motifs": _motifs(400),
        "splits": {"train": ["chr1", "chr2", "chr3"], "val": ["chr4"], "test": ["chr5"]},
    },
    # the quality benchmark (issue 7): a few thousand peaks, held-out chromosomes
    "benchmark": {
        "chromosome-lengths": [3_000_000, 2_800_000, 2_600_000, 2_400_000, 2_200_000, 2_000_000, 1_800_000, 1_600_000],
        "motifs": _motifs(1500),
        "splits": {"train": ["chr3", "chr4", "chr5", "chr6", "chr7", "chr8"], "val": ["chr2"], "test": ["chr1"]},
    },
}

# Output file names, relative to the output directory.
FILE_NAMES: dict[str, str] = {
    "fasta": "genome.fa",
    "fasta-index": "genome.fa.fai",
    "chrom-sizes": "chrom.sizes",
    "experiment-plus": "experiment.plus.bw",
    "experiment-minus": "experiment.minus.bw",
    "control-plus": "control.plus.bw",
    "control-minus": "control.minus.bw",
    "peaks": "peaks.narrowPeak",
    "sites": "sites.bed",
    "truth-bias-plus": "truth/bias.plus.bw",
    "truth-bias-minus": "truth/bias.minus.bw",
    "truth-signal-plus": "truth/signal.plus.bw",
    "truth-signal-minus": "truth/signal.minus.bw",
    "truth-expected-plus": "truth/expected.plus.bw",
    "truth-expected-minus": "truth/expected.minus.bw",
    "truth-json": "truth.json",
}
_BIGWIG_KEYS = [key for key in FILE_NAMES if key.endswith(("-plus", "-minus"))]

# Independent random streams (SeedSequence entropy = [seed, stream, index]).
_GENOME, _BIAS, _SITES, _COUNTS, _CONTROL, _PEAKS, _MARKOV, _MOTIFS = range(1, 9)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def chromosome_names(num: int) -> list[str]:
    return [f"chr{i + 1}" for i in range(num)]


def resolve_config(config: dict, source: str = "simulate config") -> dict:
    """The preset's keys under the config's own, each motif entry over its built-in motif's
    settings, then the schema's defaults (bpflow/schemas/simulate.schema.json); validated."""
    schemas.validate(config, "simulate", source)  # the raw config first: its errors name its own keys
    cfg = copy.deepcopy(config)
    preset = config.get("preset")
    if preset is not None:
        cfg = {**copy.deepcopy(PRESETS[preset]), **cfg}
        if "chromosome-lengths" in config and "splits" not in config:
            cfg["splits"] = None  # the preset's splits name the preset's chromosomes
    motifs = []
    for entry in cfg.get("motifs", schemas.load_schema("simulate")["properties"]["motifs"]["default"]):
        if "random-concentration" in entry and "random-length" not in entry:
            raise BpflowError(f"{source}: key motifs: {entry['name']!r}: random-concentration needs random-length")
        builtin = builtin_key(entry["name"]) if not {"file", "random-length"} & set(entry) else None
        if not {"file", "random-length"} & set(entry) and builtin is None:
            raise BpflowError(
                f"{source}: key motifs: {entry['name']!r} is not a built-in motif "
                f"({', '.join(BUILTIN_FILES)}); give a 'file' (JASPAR or MEME) or a 'random-length' for it"
            )
        motifs.append({**(copy.deepcopy(BUILTIN_SETTINGS[builtin]) if builtin else {}), **entry})
    cfg["motifs"] = motifs
    cfg = schemas.validate(cfg, "simulate", source)
    cfg["preset"] = preset
    _check_config(cfg, source)
    return cfg


def _check_config(cfg: dict, source: str) -> None:
    names = chromosome_names(len(cfg["chromosome-lengths"]))
    margin = cfg["edge-margin"]
    for name, length in zip(names, cfg["chromosome-lengths"]):
        if length < 2 * margin + 1000:
            raise BpflowError(
                f"{source}: key chromosome-lengths: {name} is {length} bp, shorter than "
                f"2 x edge-margin ({margin}) + 1000"
            )
    seen = set()
    for entry in cfg["motifs"]:
        if entry["name"] in seen:
            raise BpflowError(f"{source}: key motifs: motif name {entry['name']!r} is used twice")
        seen.add(entry["name"])
    if sum(m["num-sites"] for m in cfg["motifs"]) < 1:
        raise BpflowError(f"{source}: key motifs: at least one site must be planted")
    low, high = cfg["peak-width"]
    if low > high:
        raise BpflowError(f"{source}: key peak-width: minimum {low} is larger than maximum {high}")
    if cfg["bias-motif-cut-offset"] >= len(cfg["bias-motif"]):
        raise BpflowError(
            f"{source}: key bias-motif-cut-offset: {cfg['bias-motif-cut-offset']} is outside "
            f"the bias motif {cfg['bias-motif']!r}"
        )
    if cfg["splits"] is not None:
        used: dict[str, str] = {}
        for split, chroms in cfg["splits"].items():
            for chrom in chroms:
                if chrom not in names:
                    raise BpflowError(
                        f"{source}: key splits/{split}: no chromosome {chrom!r} (the genome has "
                        f"{names[0]}..{names[-1]})"
                    )
                if chrom in used:
                    raise BpflowError(f"{source}: key splits/{split}: {chrom} is also in {used[chrom]}")
                used[chrom] = split


def default_splits(names: list[str]) -> dict[str, list[str]]:
    """Last chromosome for test, the one before for validation, the rest for training."""
    if len(names) < 3:
        return {"train": list(names), "val": [], "test": []}
    return {"train": names[:-2], "val": [names[-2]], "test": [names[-1]]}


def background_composition(gc: float) -> np.ndarray:
    at, cg = round((1 - gc) / 2, 9), round(gc / 2, 9)
    return np.array([at, cg, cg, at], dtype=np.float64)


def _gc_profile(length: int, cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """Expected GC fraction per base: block values interpolated linearly between block centres."""
    block = cfg["gc-block-length"]
    num_blocks = length // block + 2
    values = np.clip(cfg["gc-mean"] + cfg["gc-sd"] * rng.standard_normal(num_blocks), 0.2, 0.8)
    centres = (np.arange(num_blocks) - 0.5) * block
    return np.interp(np.arange(length, dtype=np.float64), centres, values).astype(np.float32)


def markov_transitions(cfg: dict) -> np.ndarray:
    """The ``sequence-model`` "markov" chain: P(next base | previous ``markov-order`` bases),
    (4**order, 4), each row drawn from a Dirichlet with ``markov-concentration`` (smaller: more
    uneven k-mer frequencies), seeded by ``seed``."""
    rng = _rng(cfg["seed"], _MARKOV)
    order = cfg["markov-order"]
    return rng.dirichlet(np.full(4, cfg["markov-concentration"]), size=4**order)


def _markov_sequence(length: int, transitions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bases (codes 0..3) of an order-k Markov chain with ``transitions`` (4**k, 4)."""
    cumulative = np.cumsum(transitions, axis=1)[:, :3].tolist()
    mask = len(transitions) - 1
    state = int(rng.integers(len(transitions)))
    draws = rng.random(length).tolist()
    out = bytearray(length)
    for i, x in enumerate(draws):
        c = cumulative[state]
        b = 0 if x < c[0] else 1 if x < c[1] else 2 if x < c[2] else 3
        out[i] = b
        state = ((state << 2) | b) & mask
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def _local_gc(codes: np.ndarray, window: int) -> np.ndarray:
    """GC fraction of the ``window`` bases around each position (for site placement)."""
    csum = np.concatenate([[0.0], np.cumsum((codes == 1) | (codes == 2), dtype=np.float64)])
    pos = np.arange(len(codes))
    lo = np.clip(pos - window // 2, 0, len(codes))
    hi = np.clip(pos - window // 2 + max(1, window), 0, len(codes))
    return ((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)).astype(np.float32)


def _random_sequence(length: int, cfg: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if cfg["sequence-model"] == "markov":
        codes = _markov_sequence(length, markov_transitions(cfg), rng)
        gc = _local_gc(codes, cfg["gc-block-length"])
    else:
        gc = _gc_profile(length, cfg, rng)
        is_gc = rng.random(length, dtype=np.float32) < gc
        coin = rng.integers(0, 2, size=length, dtype=np.uint8)
        codes = np.where(is_gc, 1 + coin, 3 * coin).astype(np.uint8)  # C/G or A/T
    gap_len = cfg["n-gap-length"]
    for _ in range(cfg["n-gaps-per-chromosome"]):
        start = int(rng.integers(0, max(1, length - gap_len)))
        codes[start : start + gap_len] = N_CODE
    return codes, gc


# ---------------------------------------------------------------------------------------
# Enzyme bias
# ---------------------------------------------------------------------------------------


def make_bias_parameters(cfg: dict) -> dict:
    """Random k-mer weights (seeded) and the bias motif; everything truth.json records."""
    left, right = cfg["bias-kmer-left"], cfg["bias-kmer-right"]
    offsets = np.arange(-left, right + 1)
    rng = _rng(cfg["seed"], _BIAS)
    weights = rng.standard_normal((len(offsets), 4))
    weights -= weights.mean(axis=1, keepdims=True)
    weights *= (1.0 / (1.0 + 0.25 * np.abs(offsets)))[:, None]  # the cut's neighbours matter most
    total_sd = math.sqrt(float((weights**2).mean(axis=1).sum()))
    if total_sd > 0:
        weights *= cfg["bias-kmer-sd"] / total_sd
    background = background_composition(cfg["gc-mean"])
    log_shift = float(np.log((background[None, :] * np.exp(weights)).sum(axis=1)).sum())
    motif = cfg["bias-motif"]
    return {
        "kmer-offsets": [int(-left), int(right)],
        "kmer-weights": weights.round(6).tolist(),
        "kmer-log-shift": round(log_shift, 9),
        "kmer-sd": cfg["bias-kmer-sd"],
        "motif": motif,
        "motif-reverse-complement": decode(reverse_complement_codes(encode(motif))),
        "motif-factor": float(cfg["bias-motif-factor"]),
        "motif-cut-offset": int(cfg["bias-motif-cut-offset"]),
    }


def _window_has_n(codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per position i: any N (or chromosome end) in codes[i + lo : i + hi + 1]."""
    length = len(codes)
    is_n = np.concatenate([[0], np.cumsum(codes == N_CODE, dtype=np.int64)])
    start = np.arange(length) + lo
    stop = np.arange(length) + hi + 1
    out_of_range = (start < 0) | (stop > length)
    count = is_n[np.clip(stop, 0, length)] - is_n[np.clip(start, 0, length)]
    return out_of_range | (count > 0)


def kmer_codes(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer code (base-4) of every k-mer starting at each position, and whether it has an N."""
    length = len(codes) - k + 1
    value = np.zeros(max(length, 0), dtype=np.int64)
    has_n = np.zeros(max(length, 0), dtype=bool)
    for t in range(k):
        window = codes[t : t + length]
        value = value * 4 + (window & 3)
        has_n |= window == N_CODE
    return value, has_n


def _kmer_value(motif: str) -> int:
    value = 0
    for base in motif:
        value = value * 4 + BASES.index(base)
    return value


def bias_motif_cut_positions(codes: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Positions whose plus- / minus-strand cut rate the bias motif multiplies."""
    motif = params["motif"]
    k, offset = len(motif), params["motif-cut-offset"]
    values, has_n = kmer_codes(np.asarray(codes, dtype=np.uint8), k)
    plus = np.flatnonzero((values == _kmer_value(motif)) & ~has_n) + offset
    minus_starts = np.flatnonzero((values == _kmer_value(params["motif-reverse-complement"])) & ~has_n)
    minus = minus_starts + (k - 1 - offset)
    return plus, minus


def compute_bias(codes: np.ndarray, params: dict, with_motif: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Plus- and minus-strand cut-rate multipliers (float64) of a sequence given as codes.

    Plus strand at base i: exp(sum_d W[d, base(i + d)] - shift); minus strand at i:
    exp(sum_d W[d, complement(base(i - d))] - shift), for d in kmer-offsets; 0 where the
    window holds an N or leaves the sequence; times motif-factor at bias-motif cuts.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    length = len(codes)
    lo, hi = params["kmer-offsets"]
    weights = np.zeros((hi - lo + 1, 5))
    weights[:, :4] = np.asarray(params["kmer-weights"], dtype=np.float64)
    pad = max(-lo, hi)
    padded = np.full(length + 2 * pad, N_CODE, dtype=np.uint8)
    padded[pad : pad + length] = codes
    comp = np.where(padded < N_CODE, 3 - padded, N_CODE).astype(np.uint8)
    score_plus = np.zeros(length)
    score_minus = np.zeros(length)
    for j, d in enumerate(range(lo, hi + 1)):
        score_plus += weights[j][padded[pad + d : pad + d + length]]
        score_minus += weights[j][comp[pad - d : pad - d + length]]
    shift = params["kmer-log-shift"]
    plus = np.exp(score_plus - shift)
    minus = np.exp(score_minus - shift)
    plus[_window_has_n(codes, lo, hi)] = 0.0
    minus[_window_has_n(codes, -hi, -lo)] = 0.0
    if with_motif:
        cut_plus, cut_minus = bias_motif_cut_positions(codes, params)
        plus[cut_plus] *= params["motif-factor"]
        minus[cut_minus] *= params["motif-factor"]
    return plus, minus


# ---------------------------------------------------------------------------------------
# Sites, footprints, peaks
# ---------------------------------------------------------------------------------------


@dataclass
class Site:
    chrom: int  # index into the chromosome list
    start: int  # first base of the motif instance
    motif: int  # index into the motif list
    strand: str  # "+" or "-"
    score: float  # PWM log-odds of the instance (motif orientation, background gc-mean)
    strength: float  # total signal of the footprint on each strand
    native: bool = False  # found in the genome by native-hits-min-z rather than planted

    def centre(self, motif_length: int) -> float:
        return self.start + (motif_length - 1) / 2.0


def _place_sites(
    lengths: list[int],
    gc_profiles: list[np.ndarray],
    codes: list[np.ndarray],
    motifs: list[Motif],
    cfg: dict,
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    """(chrom, start, motif) of non-overlapping sites, preferring GC-rich regions."""
    bin_size = 500
    margin = cfg["edge-margin"]
    max_len = max(m.length for m in motifs)
    bin_chrom, bin_start, bin_weight = [], [], []
    for c, (length, gc, seq) in enumerate(zip(lengths, gc_profiles, codes)):
        starts = np.arange(margin, length - margin - max_len - bin_size + 1, bin_size)
        if len(starts) == 0:
            continue
        gc_bin = gc[starts + bin_size // 2].astype(np.float64)
        if cfg["gc-sd"] > 0:
            weight = np.exp(np.clip(cfg["site-gc-preference"] * (gc_bin - cfg["gc-mean"]) / cfg["gc-sd"], -50, 50))
        else:
            weight = np.ones(len(starts))
        if cfg["n-gaps-per-chromosome"]:
            is_n = np.concatenate([[0], np.cumsum(seq == N_CODE, dtype=np.int64)])
            lo = np.clip(starts - margin, 0, length)
            hi = np.clip(starts + bin_size + max_len + margin, 0, length)
            weight[(is_n[hi] - is_n[lo]) > 0] = 0.0
        bin_chrom.append(np.full(len(starts), c))
        bin_start.append(starts)
        bin_weight.append(weight)
    labels = np.repeat(np.arange(len(motifs)), [m["num-sites"] for m in cfg["motifs"]])
    needed = len(labels)
    if not bin_weight or np.concatenate(bin_weight).sum() <= 0:
        raise BpflowError("simulate: no room for sites (chromosomes too short for edge-margin, or all N)")
    bin_chrom_a = np.concatenate(bin_chrom)
    bin_start_a = np.concatenate(bin_start)
    prob = np.concatenate(bin_weight)
    prob = prob / prob.sum()
    spacing = max(cfg["site-min-spacing"], max_len + 1)
    occupied: dict[tuple[int, int], list[int]] = {}
    accepted: list[tuple[int, int]] = []
    for _attempt in range(20):
        batch = max(4 * (needed - len(accepted)), 64)
        picks = rng.choice(len(prob), size=batch, p=prob)
        offsets = rng.integers(0, bin_size, size=batch)
        for b, off in zip(picks, offsets):
            chrom, pos = int(bin_chrom_a[b]), int(bin_start_a[b] + off)
            key = pos // spacing
            near = (
                occupied.get((chrom, key - 1), []) + occupied.get((chrom, key), []) + occupied.get((chrom, key + 1), [])
            )
            if any(abs(pos - other) < spacing for other in near):
                continue
            occupied.setdefault((chrom, key), []).append(pos)
            accepted.append((chrom, pos))
            if len(accepted) == needed:
                break
        if len(accepted) == needed:
            break
    if len(accepted) < needed:
        raise BpflowError(
            f"simulate: could place only {len(accepted)} of {needed} sites {spacing} bp apart; "
            "lower num-sites or site-min-spacing, or lengthen the chromosomes"
        )
    labels = rng.permutation(labels)
    return [(chrom, pos, int(m)) for (chrom, pos), m in zip(accepted, labels)]


def _sample_instances(
    motif: Motif,
    count: int,
    rng: np.random.Generator,
    min_z: float | None = None,
    background: np.ndarray | None = None,
    name: str = "",
) -> np.ndarray:
    """``count`` instances drawn from the PWM; with ``min_z``, drawn from it conditioned on a
    score z >= min_z (rejection sampling)."""
    cdf = np.cumsum(motif.probabilities, axis=1)
    cdf[:, -1] = 1.0

    def draw(num: int) -> np.ndarray:
        u = rng.random((num, motif.length))
        return (u[:, :, None] > cdf[None, :, :]).sum(axis=2).astype(np.uint8)

    if min_z is None:
        return draw(count)
    mean, sd = motif.score_moments(background)
    best = float(motif.log_odds(background).max(axis=1).sum())
    if sd <= 0 or (best - mean) / sd < min_z:
        top = (best - mean) / sd if sd > 0 else 0.0
        raise BpflowError(
            f"simulate: key motifs: {name!r}: native-hits-min-z {min_z:g} is above the z of its best "
            f"instance ({top:.2f}); lower it"
        )
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(1000):
        batch = draw(max(4 * (count - have), 64))
        batch = batch[(motif.score(batch, background) - mean) / sd >= min_z]
        kept.append(batch)
        have += len(batch)
        if have >= count:
            return np.concatenate(kept)[:count]
    raise BpflowError(f"simulate: key motifs: {name!r}: too few PWM draws reach native-hits-min-z {min_z:g}; lower it")


def _scan_scores(codes: np.ndarray, motif: Motif, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds of the motif at every start (chromosomes are longer than any motif), the better
    strand's, and whether that is the minus strand; a window with an N scores about -1e6."""
    length = motif.length
    n = len(codes) - length + 1
    log_odds = np.concatenate([motif.log_odds(background), np.full((length, 1), -1e6)], axis=1)
    complement = np.array([3, 2, 1, 0, N_CODE], dtype=np.uint8)
    forward = np.zeros(n)
    reverse = np.zeros(n)
    for j in range(length):
        window = codes[j : j + n]
        forward += log_odds[j, window]
        reverse += log_odds[length - 1 - j, complement[window]]
    return np.maximum(forward, reverse), reverse > forward


def add_native_hits(
    codes: list[np.ndarray], sites: list[Site], motifs: list[Motif], cfg: dict, rng: np.random.Generator
) -> list[Site]:
    """Sites at every genome position whose score z reaches its motif's ``native-hits-min-z``
    (either strand), outside edge-margin, not overlapping a planted or an earlier site (the
    higher z first); strengths follow the same rule as the planted sites'."""
    background = background_composition(cfg["gc-mean"])
    margin = cfg["edge-margin"]
    occupied = [np.zeros(len(seq), bool) for seq in codes]
    for site in sites:
        occupied[site.chrom][site.start : site.start + motifs[site.motif].length] = True
    natives: list[Site] = []
    for m, motif in enumerate(motifs):
        entry = cfg["motifs"][m]
        min_z = entry["native-hits-min-z"]
        if min_z is None:
            continue
        mean, sd = motif.score_moments(background)
        for c, seq in enumerate(codes):
            scores, minus = _scan_scores(seq, motif, background)
            z = (scores - mean) / sd
            z[:margin] = -np.inf
            z[max(0, len(seq) - margin - motif.length) :] = -np.inf
            found = np.flatnonzero(z >= min_z)
            for pos in found[np.argsort(-z[found], kind="stable")]:
                if occupied[c][pos : pos + motif.length].any():
                    continue
                occupied[c][pos : pos + motif.length] = True
                log_strength = (
                    math.log(entry["strength-median"])
                    + entry["strength-score-sd"] * z[pos]
                    + entry["strength-noise-sd"] * rng.standard_normal()
                )
                strand = "-" if minus[pos] else "+"
                natives.append(
                    Site(c, int(pos), m, strand, float(scores[pos]), float(math.exp(log_strength)), native=True)
                )
    return sorted(sites + natives, key=lambda s: (s.chrom, s.start))


def plant_sites(
    codes: list[np.ndarray],
    placements: list[tuple[int, int, int]],
    motifs: list[Motif],
    cfg: dict,
    rng: np.random.Generator,
) -> list[Site]:
    """Write a PWM-sampled instance at each placement (random orientation); return the Sites."""
    background = background_composition(cfg["gc-mean"])
    sites: list[Site] = []
    placements = sorted(placements)
    for m, motif in enumerate(motifs):
        mine = [p for p in placements if p[2] == m]
        if not mine:
            continue
        entry = cfg["motifs"][m]
        mean, sd = motif.score_moments(background)
        instances = _sample_instances(motif, len(mine), rng, entry["native-hits-min-z"], background, entry["name"])
        minus = rng.random(len(mine)) < 0.5
        noise = rng.standard_normal(len(mine))
        scores = motif.score(instances, background)
        z = (scores - mean) / sd if sd > 0 else np.zeros(len(mine))
        log_strength = (
            math.log(entry["strength-median"]) + entry["strength-score-sd"] * z + entry["strength-noise-sd"] * noise
        )
        for (chrom, start, _), inst, is_minus, score, ls in zip(mine, instances, minus, scores, log_strength):
            planted = reverse_complement_codes(inst) if is_minus else inst
            codes[chrom][start : start + motif.length] = planted
            sites.append(Site(chrom, start, m, "-" if is_minus else "+", float(score), float(math.exp(ls))))
    sites.sort(key=lambda s: (s.chrom, s.start))
    return sites


def _kernel(length: int, mu: float, sigma: float) -> tuple[int, np.ndarray]:
    """Gaussian weights summing to 1 over integer positions within 4 sigma of mu (clipped)."""
    lo = max(0, int(math.floor(mu - 4 * sigma)))
    hi = min(length, int(math.ceil(mu + 4 * sigma)) + 1)
    x = np.arange(lo, hi, dtype=np.float64)
    w = np.exp(-0.5 * ((x - mu) / sigma) ** 2)
    total = w.sum()
    return lo, (w / total if total > 0 else w)


def footprint_peaks(site: Site, motif_length: int, entry: dict) -> tuple[float, float]:
    """Positions of the sharp plus- and minus-strand footprint peaks of a site.

    ``footprint-offsets`` [a, b] are in the motif's frame: the motif strand's peak lies a bp
    5' of the motif centre, the other strand's peak b bp 3' of it.  In genome coordinates the
    plus-strand peak is always upstream (left) and the minus-strand peak downstream.
    """
    a, b = entry["footprint-offsets"]
    centre = site.centre(motif_length)
    if site.strand == "+":
        return centre - a, centre + b
    return centre - b, centre + a


def footprint_signal(length: int, sites: list[Site], motifs: list[Motif], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bias-free expected signal (plus, minus) of one chromosome's sites."""
    plus = np.zeros(length)
    minus = np.zeros(length)
    for site in sites:
        entry = cfg["motifs"][site.motif]
        motif_length = motifs[site.motif].length
        peak_plus, peak_minus = footprint_peaks(site, motif_length, entry)
        broad = entry["broad-fraction"]
        centre = site.centre(motif_length)
        for track, mu in ((plus, peak_plus), (minus, peak_minus)):
            lo, w = _kernel(length, mu, entry["footprint-sigma"])
            track[lo : lo + len(w)] += site.strength * (1.0 - broad) * w
            if broad > 0:
                lo, w = _kernel(length, centre, entry["broad-sigma"])
                track[lo : lo + len(w)] += site.strength * broad * w
    return plus, minus


def make_peaks(
    sites: list[Site], motifs: list[Motif], lengths: list[int], cfg: dict, rng: np.random.Generator
) -> list[tuple[int, int, int, int, float]]:
    """(chrom, start, end, summit offset, strength) of a narrowPeak record per site."""
    low, high = cfg["peak-width"]
    sd = cfg["summit-jitter-sd"]
    peaks = []
    for site in sites:
        jitter = float(np.clip(rng.standard_normal() * sd, -3 * sd, 3 * sd)) if sd > 0 else 0.0
        summit = int(math.floor(site.centre(motifs[site.motif].length) + jitter + 0.5))
        width = int(rng.integers(low, high + 1))
        left = int(round(width * rng.uniform(0.35, 0.65)))
        start = max(0, summit - left)
        end = min(lengths[site.chrom], start + width)
        peaks.append((site.chrom, start, end, summit - start, site.strength))
    return peaks


# ---------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------


def _write_fasta(path: Path, names: list[str], codes: list[np.ndarray], width: int = 60) -> list[tuple]:
    """Write the FASTA; return .fai rows (name, length, offset, line bases, line bytes)."""
    rows = []
    offset = 0
    with open(path, "wb") as fh:
        for name, seq in zip(names, codes):
            header = f">{name}\n".encode()
            fh.write(header)
            offset += len(header)
            letters = CODE_LETTERS[seq]
            full = len(seq) // width
            body = np.empty((full, width + 1), dtype=np.uint8)
            body[:, :width] = letters[: full * width].reshape(full, width)
            body[:, width] = ord("\n")
            chunk = body.tobytes()
            rest = letters[full * width :]
            if len(rest):
                chunk += rest.tobytes() + b"\n"
            fh.write(chunk)
            rows.append((name, len(seq), offset, width, width + 1))
            offset += len(chunk)
    return rows


def random_motif(name: str, length: int, seed: int, concentration: float = 0.3) -> Motif:
    """A random PWM: each position's probabilities drawn from a Dirichlet with
    ``concentration`` (0.3: mostly one or two dominant bases), seeded by ``seed`` and the name."""
    rng = np.random.default_rng([int(seed), _MOTIFS, zlib.crc32(name.encode())])
    probs = rng.dirichlet(np.full(4, concentration), size=length)
    probs = (probs + 1e-3) / (1 + 4e-3)
    return Motif(name, probs, matrix_id=f"random-{length}", source="random")


def load_motif(entry: dict, seed: int = 0) -> Motif:
    """The motif of a (resolved) config entry: ``file`` [+ ``matrix-id``], ``random-length``
    (a random PWM, seeded by ``seed`` and the name), or a built-in name."""
    if "file" in entry:
        return motif_from_file(entry["file"], entry.get("matrix-id"))
    if "random-length" in entry:
        return random_motif(entry["name"], entry["random-length"], seed, entry.get("random-concentration", 0.3))
    return builtin_motifs()[builtin_key(entry["name"])]


# ---------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------


def simulate(config: dict, source: str = "simulate config") -> dict[str, str]:
    """Run the simulation of a config dict; return {file key: absolute path} of what it wrote."""
    cfg = resolve_config(config, source)
    started = time.monotonic()
    out = Path(cfg["output-dir"]).resolve()
    (out / "truth").mkdir(parents=True, exist_ok=True)
    seed = cfg["seed"]
    lengths = list(cfg["chromosome-lengths"])
    names = chromosome_names(len(lengths))
    motifs = [load_motif(entry, cfg["seed"]) for entry in cfg["motifs"]]
    for motif, entry in zip(motifs, cfg["motifs"]):
        widest = max(entry["broad-sigma"], entry["footprint-sigma"])
        reach = motif.length + max(entry["footprint-offsets"]) + 4 * widest
        if reach > cfg["edge-margin"]:
            logger.warning(
                "motif %s: footprints reach %d bp, beyond edge-margin %d: they may be cut at chromosome ends",
                entry["name"],
                reach,
                cfg["edge-margin"],
            )
    paths = {key: out / name for key, name in FILE_NAMES.items()}
    # truth.json marks a finished run: drop a previous run's before rewriting anything, and
    # its control tracks if this run writes none
    stale = ["truth-json"] + ([] if cfg["write-control"] else ["control-plus", "control-minus"])
    for key in stale:
        paths[key].unlink(missing_ok=True)

    codes, gc_profiles = [], []
    for c, length in enumerate(lengths):
        seq, gc = _random_sequence(length, cfg, _rng(seed, _GENOME, c))
        codes.append(seq)
        gc_profiles.append(gc)
    placements = _place_sites(lengths, gc_profiles, codes, motifs, cfg, _rng(seed, _SITES, 0))
    sites = plant_sites(codes, placements, motifs, cfg, _rng(seed, _SITES, 1))
    if any(entry["native-hits-min-z"] is not None for entry in cfg["motifs"]):
        sites = add_native_hits(codes, sites, motifs, cfg, _rng(seed, _SITES, 2))
    del gc_profiles
    peaks = make_peaks(sites, motifs, lengths, cfg, _rng(seed, _PEAKS))
    bias_params = make_bias_parameters(cfg)
    logger.info(
        "simulate: %d chromosomes, %d bp, %d sites of %d motifs -> %s",
        len(lengths),
        sum(lengths),
        len(sites),
        len(motifs),
        out,
    )

    totals = {"experiment-plus": 0, "experiment-minus": 0, "control-plus": 0, "control-minus": 0}
    bigwig_keys = [k for k in _BIGWIG_KEYS if cfg["write-control"] or not k.startswith("control")]
    # The dense truth tracks skip zoom levels (only genome browsers use them): 3x faster to
    # write and a third smaller.
    zooms = [0 if key.startswith(("truth-bias", "truth-expected")) else 10 for key in bigwig_keys]
    with bigwig_writers([paths[k] for k in bigwig_keys], list(zip(names, lengths)), zooms) as opened:
        writers = dict(zip(bigwig_keys, opened))
        sites_by_chrom = {c: [s for s in sites if s.chrom == c] for c in range(len(lengths))}
        for c in progress(range(len(lengths)), total=len(lengths), desc="simulate", unit="chromosomes"):
            name, length = names[c], lengths[c]
            bias = compute_bias(codes[c], bias_params)
            signal = footprint_signal(length, sites_by_chrom[c], motifs, cfg)
            counts_rng = _rng(seed, _COUNTS, c)
            control_rng = _rng(seed, _CONTROL, c)
            for s, strand in enumerate(("plus", "minus")):
                b = bias[s].astype(np.float32).astype(np.float64)
                sig = signal[s].astype(np.float32).astype(np.float64)
                expected = cfg["depth"] * b * (1.0 + sig)
                observed = counts_rng.poisson(expected)
                totals[f"experiment-{strand}"] += int(observed.sum())
                add_track(writers[f"truth-bias-{strand}"], name, b)
                add_track(writers[f"truth-signal-{strand}"], name, sig)
                add_track(writers[f"truth-expected-{strand}"], name, expected)
                add_track(writers[f"experiment-{strand}"], name, observed)
                if cfg["write-control"]:
                    control = control_rng.poisson(cfg["control-depth"] * b)
                    totals[f"control-{strand}"] += int(control.sum())
                    add_track(writers[f"control-{strand}"], name, control)

    with atomic_output(paths["fasta"]) as tmp:
        fai_rows = _write_fasta(tmp, names, codes)
    with atomic_output(paths["fasta-index"]) as tmp:  # written after the FASTA: newer mtime
        tmp.write_text("".join("\t".join(map(str, row)) + "\n" for row in fai_rows))
    with atomic_output(paths["chrom-sizes"]) as tmp:
        tmp.write_text("".join(f"{n}\t{n_len}\n" for n, n_len in zip(names, lengths)))

    max_strength = max(s.strength for s in sites)
    with atomic_output(paths["sites"]) as tmp:
        with open(tmp, "w") as fh:
            for s in sites:
                motif = motifs[s.motif]
                score = int(round(1000 * s.strength / max_strength))
                fh.write(
                    f"{names[s.chrom]}\t{s.start}\t{s.start + motif.length}\t"
                    f"{cfg['motifs'][s.motif]['name']}\t{score}\t{s.strand}\t"
                    f"{s.strength:.3f}\t{s.score:.3f}\n"
                )
    # peak_K belongs to the K-th site of sites.bed; peaks are sorted by position
    order = sorted(range(len(peaks)), key=lambda i: peaks[i][:3])
    with atomic_output(paths["peaks"]) as tmp:
        with open(tmp, "w") as fh:
            for i in order:
                c, start, end, summit, strength = peaks[i]
                score = int(round(1000 * strength / max_strength))
                fh.write(f"{names[c]}\t{start}\t{end}\tpeak_{i + 1}\t{score}\t.\t{strength:.3f}\t-1\t-1\t{summit}\n")

    truth = {
        "format-version": TRUTH_FORMAT_VERSION,
        "model": "expected_s(x) = depth * bias_s(x) * (1 + signal_s(x)); observed ~ Poisson(expected); "
        "control ~ Poisson(control-depth * bias_s(x))",
        "seed": seed,
        "preset": cfg["preset"],
        "depth": cfg["depth"],
        "control-depth": cfg["control-depth"] if cfg["write-control"] else None,
        "chromosomes": dict(zip(names, lengths)),
        "splits": cfg["splits"] or default_splits(names),
        "gc": {
            "mean": cfg["gc-mean"],
            "sd": cfg["gc-sd"],
            "block-length": cfg["gc-block-length"],
            "realized": {n: round(float(_gc_of(s)), 6) for n, s in zip(names, codes)},
        },
        "motifs": [
            _motif_truth(m, e, cfg, [s for s in sites if s.motif == i])
            for i, (m, e) in enumerate(zip(motifs, cfg["motifs"]))
        ],
        "bias": bias_params,
        "num-sites": len(sites),
        "num-peaks": len(peaks),
        "total-counts": {k: v for k, v in totals.items() if cfg["write-control"] or not k.startswith("control")},
        "files": {k: v for k, v in FILE_NAMES.items() if cfg["write-control"] or not k.startswith("control")},
        "config": cfg,
    }
    write_json_atomic(paths["truth-json"], truth)
    logger.info("simulate: wrote %s in %.1f s", out, time.monotonic() - started)
    return {key: str(out / name) for key, name in truth["files"].items()}


def _gc_of(codes: np.ndarray) -> float:
    counts = np.bincount(codes, minlength=5)[:4]
    total = counts.sum()
    return (counts[1] + counts[2]) / total if total else 0.0


def _motif_truth(motif: Motif, entry: dict, cfg: dict, sites: list[Site]) -> dict:
    background = background_composition(cfg["gc-mean"])
    mean, sd = motif.score_moments(background)
    return {
        "name": entry["name"],
        "matrix-id": motif.matrix_id,
        "matrix-name": motif.name,
        "source": entry.get("file") or f"bpflow/data/motifs/{Path(motif.source).name} (JASPAR CORE, CC BY 4.0)",
        "consensus": motif.consensus,
        "reverse-complement-consensus": decode(reverse_complement_codes(encode(motif.consensus))),
        "length": motif.length,
        "probabilities": motif.probabilities.round(6).tolist(),
        "num-sites": len(sites),
        "native-sites": sum(s.native for s in sites),
        "log-odds-background": background.tolist(),
        "log-odds-mean": round(mean, 6),
        "log-odds-sd": round(sd, 6),
        **{
            k: entry[k]
            for k in (
                "strength-median",
                "strength-score-sd",
                "strength-noise-sd",
                "footprint-offsets",
                "footprint-sigma",
                "broad-fraction",
                "broad-sigma",
                "native-hits-min-z",
            )
        },
    }


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = step_parser(
        "bpflow simulate",
        "Write a synthetic genome with planted TF motif sites, enzyme bias, ChIP-nexus-like stranded counts "
        "(bigWig), peaks and the noiseless truth tracks.  Either CONFIG.json, or --preset with --output-dir. "
        "Keys: docs/simulate.md.",
    )
    parser.add_argument("config", nargs="?", help="JSON config (hyphenated keys)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="use a built-in size")
    parser.add_argument("--output-dir", help="output directory (overrides the config's)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's)")
    parser.add_argument(
        "--show-preset", choices=sorted(PRESETS), help="print the full config of a preset as JSON and exit"
    )
    args = parser.parse_args(argv)
    if args.show_preset:
        cfg = resolve_config(
            {"preset": args.show_preset, "output-dir": args.output_dir or f"simulated-{args.show_preset}"}
        )
        del cfg["preset"]
        print(json.dumps(cfg, indent=2))
        return 0
    if args.config and args.preset:
        raise BpflowError('give either CONFIG.json or --preset, not both (a config may set "preset")')
    if args.config:
        config = load_json_config(args.config)
        source = args.config
    elif args.preset:
        if not args.output_dir:
            raise BpflowError("--preset needs --output-dir")
        config = {"preset": args.preset}
        source = f"preset {args.preset}"
    else:
        raise BpflowError("give CONFIG.json or --preset NAME --output-dir DIR (see --help)")
    if args.output_dir:
        config["output-dir"] = args.output_dir
    if args.seed is not None:
        config["seed"] = args.seed
    setup_logging(args.verbosity or (config.get("verbosity") if isinstance(config, dict) else None) or "INFO")
    simulate(config, source)
    return 0
