"""Print the headline table of an `emovec compare --json` file as Markdown (for the README's model table).

    python benchmarks/headline_table.py compare.json

One column per run, one row per headline number: the value, its 95% CI, the null (shuffled labels, or
chance) and the baseline where the results carry them, and the paper's value; "—" where the run has no
such result. Then the RSA between the runs' emotion geometries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

ROWS = [
    ("pc1_valence_r", "PC1 ↔ valence r"),
    ("best_pc_valence_r", "valence, best PC (abs r)"),
    ("pc2_arousal_r", "PC2 ↔ arousal r"),
    ("best_pc_arousal_r", "arousal, best PC (abs r)"),
    ("decode_valence_r", "valence decodability (nested-CV r)"),
    ("decode_arousal_r", "arousal decodability (nested-CV r)"),
    ("heldout_top1", "held-out top-1, all emotions"),
    ("heldout_top1_focal", "held-out top-1, 12 focal"),
    ("steering_diagonal", "steering diagonal (row-max share)"),
    ("preference_blissful_r", "blissful ↔ preference r"),
    ("preference_hostile_r", "hostile ↔ preference r"),
]


def num(v: object, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—" if v is None else str(v)


def cell(e: object) -> str:
    """value [CI]; null; baseline; paper — as far as the entry has them."""
    if not isinstance(e, Mapping) or e.get("value") is None:
        return "—"
    parts = [num(e["value"]) + (f" [{num(e['ci'][0])}, {num(e['ci'][1])}]" if e.get("ci") else "")
             + (f" (PC{e['pc']})" if e.get("pc") is not None else "")]
    null = e.get("null")
    if isinstance(null, Mapping):
        if null.get("q95") is not None:
            parts.append(f"null q95 {num(null['q95'])}, p {num(null.get('p'), 3)}")
        elif null.get("shuffled_elo_q95_abs") is not None:
            parts.append(f"shuffled-Elo null |r| q95 {num(null['shuffled_elo_q95_abs'])}, p {num(null.get('p'), 3)}")
        elif null.get("chance") is not None:
            parts.append(f"chance {num(null['chance'])}")
    if e.get("centred_top1") is not None:
        ci = e.get("centred_top1_ci")
        parts.append(f"centred {num(e['centred_top1'])}" + (f" [{num(ci[0])}, {num(ci[1])}]" if ci else ""))
    if e.get("margin") is not None:
        ci = e.get("margin_ci")
        parts.append(f"margin {num(e['margin'])}" + (f" [{num(ci[0])}, {num(ci[1])}]" if ci else "")
                     + f", {e.get('emotions_beating_random')} beat random; recommended {e.get('recommended_variant')}")
    base = e.get("baseline")
    if isinstance(base, Mapping) and base.get("value") is not None:
        parts.append(f"lexical {num(base['value'])}")
    if e.get("paper") is not None:
        parts.append(f"paper {e['paper']}")
    return "; ".join(parts).replace("|", "\\|")


def table(data: Mapping) -> str:
    runs = data["runs"]
    models = [str(r["model"]) for r in runs]
    names = [m if models.count(m) == 1 else f"{m} ({Path(str(r['run'])).name})" for m, r in zip(models, runs)]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell((r.get("headline") or {}).get(key)) for r in runs) + " |"
              for key, label in ROWS]
    rsa = data.get("rsa") or {}
    if len(runs) > 1 and rsa.get("r"):
        lines += ["", "RSA between emotion geometries (" + str(rsa.get("method")) + "):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(runs) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(num(v) for v in row) + " |" for m, row in zip(names, rsa["r"])]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/headline_table.py COMPARE.json", file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text("utf-8"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
