"""Rebuild ``JASPAR2024_CORE_vertebrates_non-redundant.meme`` from the JASPAR 2024 SQLite
database that the ``pyjaspar`` package (MIT licence; the JASPAR data CC BY 4.0) ships:

    pip download pyjaspar==4.0.0 --no-deps -d /tmp/pj && unzip -o /tmp/pj/*.whl -d /tmp/pj
    python bpflow/data/motifs/make_jaspar_meme.py /tmp/pj/pyjaspar/data/JASPAR2024.sqlite

CORE collection, taxonomic group vertebrates, the latest version of each matrix (JASPAR's
"non-redundant" set: 879 matrices), counts turned into frequencies (each column / its sum).
Not imported by bpflow; kept so that the shipped file can be checked and rebuilt.
"""

import sqlite3
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "JASPAR2024_CORE_vertebrates_non-redundant.meme"


def main(database: str) -> None:
    db = sqlite3.connect(database)
    rows = db.execute(
        "SELECT m.ID, m.BASE_ID, m.VERSION, m.NAME FROM MATRIX m JOIN MATRIX_ANNOTATION a ON a.ID = m.ID "
        "WHERE m.COLLECTION = 'CORE' AND a.TAG = 'tax_group' AND a.VAL = 'vertebrates'"
    ).fetchall()
    latest: dict[str, tuple[int, int, str]] = {}
    for ident, base, version, name in rows:
        if base not in latest or version > latest[base][1]:
            latest[base] = (ident, version, name)
    lines = [
        "MEME version 4",
        "",
        "ALPHABET= ACGT",
        "",
        "strands: + -",
        "",
        "Background letter frequencies",
        "A 0.25 C 0.25 G 0.25 T 0.25",
        "",
    ]
    for base in sorted(latest):
        ident, version, name = latest[base]
        counts: dict[str, dict[int, float]] = {b: {} for b in "ACGT"}
        for row, col, val in db.execute("SELECT ROW, COL, VAL FROM MATRIX_DATA WHERE ID = ?", (ident,)):
            counts[row][int(col)] = float(val)
        width = max(counts["A"])
        total = [sum(counts[b][i] for b in "ACGT") for i in range(1, width + 1)]
        lines.append(f"MOTIF {base}.{version} {name.replace(' ', '_')}")
        lines.append(f"letter-probability matrix: alength= 4 w= {width} nsites= {round(total[0])} E= 0")
        for i in range(1, width + 1):
            lines.append(" ".join(f"{counts[b][i] / total[i - 1]:.6f}" for b in "ACGT"))
        lines.append("")
    OUT.write_text("\n".join(lines))
    print(f"{OUT}: {len(latest)} motifs")


if __name__ == "__main__":
    main(sys.argv[1])
