"""Whose emotion is it (issue #13), measured on a real model: present- vs other-speaker families from the
shipped two-speaker dialogues, and deflection vectors from the shipped deflection records, at the
artifact's default layer, each beside the paper's value.

Usage: PYTHONPATH=src python benchmarks/speakers.py ARTIFACT [--model smollm2-135m] [--threads 1]
       [--controls person1_person2,assistant_story,story_ha] [--story-per-emotion 4] (fewer for large models on CPU)
       [--parts speakers,deflection] (compute only these; the other part is read from ARTIFACT/results/, so the
       two parts of a large model can run as two processes, one per core, and `--parts ''` prints the line)
Writes ARTIFACT/results/speakers.json and deflection.json (what `emovec speakers` / `emovec deflection`
write) and prints, last, each number beside the paper's (Sonnet 4.5; paper-notes §3.7c, §7.2, §7.3):
`speakers-bench: present_vs_other=.. (shuffled null ..; paper 0.15-0.25) story_vs_present=.. (paper 0.52) story_vs_other=..
 (paper 0.20) deflection_diag=.. (paper 0.046) remaining=.. (paper 0.80) probe expressed=.. (paper 0.713)
 deflected=.. (paper 0.760) unexpressed_neutral=.. (paper 0.386) unexpressed_story=.. (paper 0.760)
 unexpressed_others=.. (paper 0.826) chance=0.067 (paper 0.067)` (one line)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from emovec.artifact import load_result, save_result
from emovec.deflection import PAPER as DEFLECTION_PAPER
from emovec.deflection import deflection_analysis
from emovec.dialogues import CONDITIONS, load_deflection, load_two_speaker
from emovec.models import LoadedModel, load_model
from emovec.speakers import PAPER as SPEAKERS_PAPER
from emovec.speakers import CONTROLS, speaker_probes
from emovec.vectors import EmotionVectors


PARTS = ("speakers", "deflection")


def stored(artifact: Path, name: str) -> dict | None:
    """A part computed by an earlier invocation (`--parts`): its result, or None when missing or stale."""
    found = load_result(artifact, name)
    return None if found is None or found.stale else dict(found.data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--controls", default=",".join(CONTROLS), help="comma list ('' for none)")
    parser.add_argument("--story-per-emotion", type=int, default=4, help="stories per emotion for story_ha")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="parts to compute (the others are read from ARTIFACT/results/; '' computes none)")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if any(p not in PARTS for p in parts):
        raise SystemExit(f"error: --parts takes {', '.join(PARTS)}, got {args.parts!r}")
    torch.set_num_threads(args.threads)
    vecs = EmotionVectors.load(args.artifact)
    lm = load_model(args.model) if parts else None
    spk = speakers_part(lm, vecs, args) if lm and "speakers" in parts else stored(args.artifact, "speakers")
    dfl = deflection_part(lm, vecs, args) if lm and "deflection" in parts else stored(args.artifact, "deflection")
    if spk is None or dfl is None:
        missing = "speakers" if spk is None else "deflection"
        message = (f"{args.artifact}/results/{missing}.json is missing or stale (computed with other vectors): "
                   f"compute it with --parts {missing}, then print the line with --parts ''")
        if not parts:
            raise SystemExit(f"error: {message}")
        print(f"no summary line yet: {message}")
        return
    print(summary_line(spk, dfl))


def speakers_part(lm: LoadedModel, vecs: EmotionVectors, args: argparse.Namespace) -> dict:
    t0 = time.time()
    controls = [c for c in args.controls.split(",") if c]
    spk = speaker_probes(lm, vecs, load_two_speaker(), controls=controls, story_per_emotion=args.story_per_emotion)
    save_result(args.artifact, "speakers", spk)
    print(f"speakers: {time.time() - t0:.0f}s; families {spk['families']}; null {spk['null_shuffled']}")
    print(f"story_vs_cell {spk['story_vs_cell']}")
    print(f"structure_match {spk['structure_match']}")
    print(f"regulation (paper arousal r -0.47, valence r 0.07): {spk['regulation']}")
    for name, c in spk["controls"].items():
        print(f"control {name}: families {c['families']}; story_vs_present {c['story_vs_present']:.3f} "
              f"story_vs_other {c['story_vs_other']:.3f}")
    ha = spk.get("story_ha")
    if ha:
        print(f"control story_ha: raw_vs_framed {ha['raw_vs_framed']:.3f} (null p95 {ha['null_shuffled']['p95']:.3f}) "
              f"structure {ha['raw_vs_framed_structure']:.3f} raw_vs_artifact {ha['raw_vs_artifact']:.3f} "
              f"framed_vs_artifact {ha['framed_vs_artifact']:.3f} ({ha['stories']} stories)")
    return spk


def deflection_part(lm: LoadedModel, vecs: EmotionVectors, args: argparse.Namespace) -> dict:
    t0 = time.time()
    dfl = deflection_analysis(lm, vecs, load_deflection())
    save_result(args.artifact, "deflection", dfl)
    print(f"deflection: {time.time() - t0:.0f}s; vs_story diag {dfl['vs_story']['diagonal_mean']:.3f} "
          f"off {dfl['vs_story']['off_diagonal_mean']:.3f}; displayed {dfl['displayed_vs_story']}; "
          f"expressed {dfl['expressed_vs_story']:.3f}; orth {dfl['orthogonalised']}")
    probe = dfl["mixed_probe"]
    for c in [*CONDITIONS, "all"]:
        print(f"probe {c}: {probe['accuracy'][c]} null {probe['null_shuffled'][c]['accuracy']:.3f} "
              f"lexical(speaker) {probe['lexical_speaker_turns'][c]['accuracy']:.3f} "
              f"lexical(full) {probe['lexical_full_text'][c]['accuracy']:.3f} paper {probe['paper'].get(c)}")
    print(f"antagonistic means: {dfl['antagonistic']['mean']}")
    return dfl


def summary_line(spk: dict, dfl: dict) -> str:
    """The last line: every number #13's "Measured" asks, each beside the paper's value."""
    probe = dfl["mixed_probe"]
    accs = " ".join(f"{c}={probe['accuracy'][c]['accuracy']:.3f} (paper {probe['paper'][c]:.3f})" for c in CONDITIONS)
    null_pvo = spk["null_shuffled"]["present_vs_other"]["mean"]
    return (f"speakers-bench: present_vs_other={spk['families']['present_vs_other']:.3f} (shuffled null {null_pvo:.3f}; "
            "paper 0.15-0.25) "
            f"story_vs_present={spk['story_vs_present']:.3f} (paper {SPEAKERS_PAPER['story_vs_present']:.2f}) "
            f"story_vs_other={spk['story_vs_other']:.3f} (paper {SPEAKERS_PAPER['story_vs_other']:.2f}) "
            f"deflection_diag={dfl['vs_story']['diagonal_mean']:.3f} (paper {DEFLECTION_PAPER['diagonal_cosine']:.3f}) "
            f"remaining={dfl['orthogonalised']['remaining_mean']:.3f} (paper {DEFLECTION_PAPER['remaining_norm']:.2f}) "
            f"probe {accs} chance={probe['chance']:.3f} (paper {1 / 15:.3f})")


if __name__ == "__main__":
    main()
