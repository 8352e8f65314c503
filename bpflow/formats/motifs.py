"""Motifs: position weight matrices, their JASPAR / MEME readers, the built-in motifs and the
motif entries of step configs.

:class:`Motif` is the one motif type: ``probabilities`` is (length, 4) over A, C, G, T; a
motif given as a sequence string is ``fixed`` (one-hot rows, inserted as is).  The built-in
motifs are JASPAR matrices shipped in ``bpflow/data/motifs`` (CC BY 4.0; see its README).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow.formats.sequence import BASES, one_hot_encode
from bpflow.utils import BpflowError, atomic_output

MOTIF_DIR = Path(__file__).resolve().parent.parent / "data" / "motifs"
# bpflow name -> file in MOTIF_DIR
BUILTIN_FILES: dict[str, str] = {"CTCF": "MA0139.1.jaspar", "Oct4-Sox2": "MA0142.1.jaspar", "Klf4": "MA0039.2.jaspar"}
# the motif database of `bpflow motifs`: JASPAR 2024 CORE vertebrates, non-redundant (879 matrices)
JASPAR_DATABASE = MOTIF_DIR / "JASPAR2024_CORE_vertebrates_non-redundant.meme"
PSEUDOCOUNT = 0.8
PWM_MODES = ("consensus", "sample")
UNIFORM = (0.25, 0.25, 0.25, 0.25)


@dataclass(frozen=True)
class Motif:
    """A position weight matrix (or a fixed sequence).

    ``probabilities`` (length, 4) over A, C, G, T; ``matrix_id`` and ``source`` say where it
    came from (a JASPAR ID and file); ``counts`` are the JASPAR counts when read from one;
    ``fixed``: a sequence given as a string (one-hot rows, inserted as is).
    """

    name: str
    probabilities: np.ndarray
    matrix_id: str = ""
    counts: np.ndarray | None = None
    source: str = ""
    fixed: bool = False

    @property
    def length(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def consensus(self) -> str:
        """The most probable base at each position (ties to the first of A, C, G, T)."""
        return "".join(BASES[i] for i in self.probabilities.argmax(axis=1))

    def log_odds(self, background=UNIFORM) -> np.ndarray:
        """(length, 4) natural-log odds of the motif against a background composition."""
        return np.log(self.probabilities / np.asarray(background, dtype=np.float64)[None, :])

    def score(self, codes: np.ndarray, background=UNIFORM) -> np.ndarray:
        """Log-odds scores of sequences given as integer codes, shape (..., length)."""
        codes = np.asarray(codes)
        lo = self.log_odds(background)
        return lo[np.arange(self.length), codes].sum(axis=-1)

    def score_moments(self, background=UNIFORM) -> tuple[float, float]:
        """Mean and sd of the log-odds score of instances sampled from the motif itself."""
        lo = self.log_odds(background)
        mean_pos = (self.probabilities * lo).sum(axis=1)
        var_pos = (self.probabilities * lo**2).sum(axis=1) - mean_pos**2
        return float(mean_pos.sum()), float(math.sqrt(max(var_pos.sum(), 0.0)))

    def instances(self, num: int, pwm_mode: str = "consensus", seed: int = 0) -> np.ndarray:
        """(num, length, 4) uint8 one-hot instances.

        A fixed sequence, or a PWM with ``pwm_mode`` "consensus", gives the same instance (the
        consensus) for every one; "sample" draws each instance from the PWM (deterministic
        given ``seed`` and the motif name).
        """
        if pwm_mode not in PWM_MODES:
            raise BpflowError(f"pwm_mode {pwm_mode!r} is not one of {', '.join(PWM_MODES)}")
        if self.fixed or pwm_mode == "consensus":
            one = one_hot_encode(self.consensus)
            return np.broadcast_to(one, (num,) + one.shape).copy()
        rng = np.random.default_rng([int(seed), zlib.crc32(self.name.encode())])
        cum = np.cumsum(self.probabilities, axis=1)
        cum[:, -1] = 1.0
        draws = rng.random((num, self.length))
        codes = (draws[:, :, None] > cum[None, :, :]).sum(axis=2)
        return np.eye(4, dtype=np.uint8)[codes]

    def renamed(self, name: str) -> "Motif":
        return Motif(name, self.probabilities, self.matrix_id, self.counts, self.source, self.fixed)


def as_motif(motif, name: str | None = None) -> Motif:
    """A :class:`Motif` from a consensus string (A/C/G/T: a fixed sequence), a PWM array
    (length, 4; rows are normalised) or a :class:`Motif` (renamed when ``name`` is given)."""
    if isinstance(motif, Motif):
        return motif if name is None or name == motif.name else motif.renamed(name)
    if isinstance(motif, str):
        seq = motif.strip().upper()
        if not seq or set(seq) - set(BASES):
            raise BpflowError(f"motif {name or motif!r}: a motif string must consist of A, C, G, T only")
        return Motif(name or seq, one_hot_encode(seq).astype(np.float64), fixed=True)
    label = name or "motif"
    probs = np.asarray(motif, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != 4 or probs.shape[0] == 0:
        raise BpflowError(f"motif {label!r}: a PWM must have shape (length, 4), got {probs.shape}")
    if (probs < 0).any() or not (probs.sum(axis=1) > 0).all():
        raise BpflowError(f"motif {label!r}: PWM entries must be >= 0 with positive row sums")
    return Motif(label, probs / probs.sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Files: JASPAR (counts) and MEME (letter-probability matrices)


def counts_to_probabilities(counts: np.ndarray, pseudocount: float = PSEUDOCOUNT) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + pseudocount / 4.0) / (counts.sum(axis=1, keepdims=True) + pseudocount)


def read_motif_file(path: str | Path) -> list[Motif]:
    """Read PWMs from a JASPAR flat file (counts) or a MEME file (letter-probability matrices)."""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: motif file not found")
    text = path.read_text()
    motifs = _read_meme(text, path) if "letter-probability matrix" in text else _read_jaspar(text, path)
    if not motifs:
        raise BpflowError(f"{path}: no motif matrix found (expected JASPAR or MEME format)")
    return motifs


def _read_jaspar(text: str, path: Path) -> list[Motif]:
    motifs: list[Motif] = []
    header: list[str] | None = None
    rows: list[list[float]] = []

    def finish() -> None:
        if header is None:
            return
        if len(rows) != 4 or len({len(r) for r in rows}) != 1 or not rows[0]:
            raise BpflowError(f"{path}: motif {header[0]}: expected 4 rows (A, C, G, T) of equal length")
        counts = np.array(rows, dtype=np.float64).T
        if (counts < 0).any() or (counts.sum(axis=1) <= 0).any():
            raise BpflowError(f"{path}: motif {header[0]}: counts must be >= 0 with a positive column sum")
        name = header[1] if len(header) > 1 else header[0]
        motifs.append(Motif(name, counts_to_probabilities(counts), header[0], counts, str(path)))

    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            finish()
            header = line[1:].split(None, 1) or ["motif"]
            header = [h.strip() for h in header]
            rows = []
            continue
        if header is None:
            header = [path.stem]
        fields = line.replace("[", " ").replace("]", " ").split()
        if len(rows) >= 4:
            raise BpflowError(f"{path}:{lineno}: motif {header[0]} has more than 4 rows (A, C, G, T)")
        if fields and fields[0].upper() in BASES:
            if fields[0].upper() != BASES[len(rows)]:
                raise BpflowError(f"{path}:{lineno}: expected the row of base {BASES[len(rows)]}")
            fields = fields[1:]
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise BpflowError(f"{path}:{lineno}: not a row of numbers: {line!r}") from None
    finish()
    return motifs


def _read_meme(text: str, path: Path) -> list[Motif]:
    motifs: list[Motif] = []
    lines = text.splitlines()
    i = 0
    current: list[str] | None = None
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("MOTIF"):
            parts = line.split()
            current = parts[1:3] if len(parts) > 2 else parts[1:2] or ["motif"]
        elif line.startswith("letter-probability matrix"):
            width = None
            fields = line.replace("=", " = ").split()
            if "w" in fields:
                width = int(fields[fields.index("w") + 2])
            rows = []
            i += 1
            while i < len(lines) and (width is None or len(rows) < width):
                values = lines[i].split()
                if not values:
                    if width is None and rows:
                        break
                    i += 1
                    continue
                try:
                    rows.append([float(v) for v in values])
                except ValueError:
                    break
                i += 1
            probs = np.array(rows, dtype=np.float64)
            ident = current or [f"motif{len(motifs) + 1}"]
            if probs.ndim != 2 or probs.shape[1] != 4 or probs.shape[0] == 0:
                raise BpflowError(f"{path}: motif {ident[0]}: expected rows of 4 probabilities")
            if (probs < 0).any():
                raise BpflowError(f"{path}: motif {ident[0]}: probabilities must be >= 0")
            probs = probs / probs.sum(axis=1, keepdims=True)
            probs = (probs + 1e-3) / (1 + 4e-3)
            motifs.append(Motif(ident[-1], probs, ident[0], None, str(path)))
            current = None
            continue
        i += 1
    return motifs


def write_meme(path, motifs: Sequence[Motif]) -> Path:
    """Write motifs as a MEME (version 4) file of letter-probability matrices, atomically."""
    lines = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", ""]
    lines += ["Background letter frequencies", "A 0.25 C 0.25 G 0.25 T 0.25", ""]
    for motif in motifs:
        ident = motif.matrix_id or motif.name
        name = f" {motif.name}" if motif.name != ident else ""
        lines.append(f"MOTIF {ident}{name}".replace("\t", " "))
        lines.append(f"letter-probability matrix: alength= 4 w= {motif.length} nsites= 20 E= 0")
        lines += [" ".join(f"{v:.6f}" for v in row) for row in motif.probabilities]
        lines.append("")
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return Path(path)


def builtin_key(name: str) -> str | None:
    """The bpflow name of a built-in motif given by name or JASPAR ID (any case), or None."""
    wanted = name.lower()
    for key, file_name in BUILTIN_FILES.items():
        if wanted in (key.lower(), file_name[: -len(".jaspar")].lower()):
            return key
    return None


def builtin_motifs() -> dict[str, Motif]:
    """The motifs shipped in bpflow/data/motifs, keyed by bpflow name (CTCF, Oct4-Sox2, Klf4)."""
    out = {}
    for key, file_name in BUILTIN_FILES.items():
        (motif,) = read_motif_file(MOTIF_DIR / file_name)
        out[key] = motif
    return out


def motif_from_file(path, matrix_id: str | None = None) -> Motif:
    """The motif of a file with ID or name ``matrix_id`` (the first one when None)."""
    motifs = read_motif_file(path)
    if matrix_id is None:
        return motifs[0]
    for motif in motifs:
        if matrix_id in (motif.matrix_id, motif.name):
            return motif
    raise BpflowError(f"{path}: no motif with ID or name {matrix_id!r}")


# ----------------------------------------------------------------------------------------------
# Motif entries of step configs


def load_motifs(entries: Mapping[str, object]) -> dict[str, Motif]:
    """Motifs by name from config-style entries.

    Each value is a :class:`Motif`-able object (see :func:`as_motif`), or a dict
    ``{"sequence": "TACGTC"}``, ``{"builtin": "CTCF"}`` (a motif shipped in bpflow/data/motifs)
    or ``{"file": "motifs.meme", "matrix-id": "MA0139.1"}`` (JASPAR or MEME file; the first
    matrix without ``matrix-id``), or a string: a built-in motif name (CTCF, Oct4-Sox2, Klf4,
    or their JASPAR IDs), else a motif file that exists, else a sequence of A/C/G/T.
    """
    out = {}
    for name, entry in entries.items():
        if isinstance(entry, dict):
            keys = set(entry) & {"sequence", "builtin", "file"}
            if len(keys) != 1 or set(entry) - {"sequence", "builtin", "file", "matrix-id"}:
                raise BpflowError(
                    f"motif {name!r}: give exactly one of the keys sequence, builtin, file (plus matrix-id with file)"
                )
            if "sequence" in entry:
                out[name] = as_motif(str(entry["sequence"]), name)
            elif "builtin" in entry:
                key = builtin_key(str(entry["builtin"]))
                if key is None:
                    raise BpflowError(
                        f"motif {name!r}: {entry['builtin']!r} is not a built-in motif ({', '.join(BUILTIN_FILES)})"
                    )
                out[name] = builtin_motifs()[key].renamed(name)
            else:
                out[name] = motif_from_file(entry["file"], entry.get("matrix-id")).renamed(name)
        elif isinstance(entry, str) and builtin_key(entry) is not None:
            out[name] = builtin_motifs()[builtin_key(entry)].renamed(name)
        elif isinstance(entry, (str, Path)) and Path(entry).is_file():
            out[name] = motif_from_file(entry).renamed(name)
        else:
            out[name] = as_motif(entry, name)
    return out


def simulation_motifs(truth_json) -> tuple[dict[str, Motif], dict[str, Motif]]:
    """The planted TF motifs and the bias motif of a ``bpflow simulate`` run.

    Returns ({TF motif name: Motif}, {"bias": the bias motif, a fixed sequence}) read from the
    run's ``truth.json`` (keys ``motifs[i].name`` / ``probabilities`` and ``bias.motif``).
    """
    path = Path(truth_json)
    if not path.is_file():
        raise BpflowError(f"{path}: simulation truth file not found")
    try:
        truth = json.loads(path.read_text())
        tfs = {
            m["name"]: as_motif(np.asarray(m["probabilities"], dtype=np.float64), m["name"]) for m in truth["motifs"]
        }
        bias = {"bias": as_motif(str(truth["bias"]["motif"]), "bias")}
    except (ValueError, KeyError, TypeError) as err:
        raise BpflowError(f"{path}: not a bpflow simulate truth file ({type(err).__name__}: {err})") from None
    return tfs, bias
