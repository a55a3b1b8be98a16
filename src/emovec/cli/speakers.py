"""`emovec speakers`, `emovec speakers-steer`, `emovec deflection`, `emovec shift`: whose emotion the vectors track (paper §7.2-7.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emovec.artifact import check_output_file, save_result
from emovec.cli.common import (AllowHubOpt, ArtifactArg, BoundModelOpt, DeviceOpt, DtypeOpt, JsonOpt, SeedOpt,
                               bind_model, csv_list, load_vectors, out, preflight)
from emovec.deflection import deflection_analysis
from emovec.dialogues import load_deflection, load_two_speaker
from emovec.errors import ConfigError
from emovec.models import check_device, load_model
from emovec.prompts import check_frame
from emovec.sampling import Sampling
from emovec.shift import check_pair, load_prompt_sets, shift
from emovec.speaker_steering import steering_experiments
from emovec.speakers import CONTROLS, speaker_probes
from emovec.steering import check_strength

LayerOpt = Annotated[Optional[int], typer.Option(help="Layer to analyse (default: the artifact's default layer).")]


def _layer(vecs: object, layer: int | None) -> None:
    if layer is not None:
        vecs.layer_pos(layer)  # type: ignore[attr-defined]


def speakers(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    dialogues: Annotated[Optional[list[Path]], typer.Option(help="Two-speaker dialogue JSONL (default: the shipped one).")] = None,
    layer: LayerOpt = None,
    controls: Annotated[str, typer.Option(help="Controls run too (comma list; '' for none): person1_person2, assistant_story (framings of the dialogues), story_ha (built-in stories framed as the Assistant's).")] = ",".join(CONTROLS),
    story_per_emotion: Annotated[int, typer.Option(min=1, help="Built-in training stories per emotion for the story_ha control (each read twice).")] = 4,
    permutations: Annotated[int, typer.Option(help="Shuffled-label null draws.")] = 20,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Dialogues per forward pass.")] = 8,
    json_out: JsonOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Present- vs other-speaker probes from two-speaker dialogues: the 2×2 grid, family cosines, structure
    match, story similarity, and the Person 1/Person 2 controls (paper §3.7a, §7.2)."""
    vecs = load_vectors(artifact)
    _layer(vecs, layer)
    if permutations < 1 or batch_size < 1:
        raise ConfigError("--permutations and --batch-size must be at least 1")
    chosen = csv_list(controls) or []
    for c in chosen:
        if c not in CONTROLS:
            raise ConfigError(f"--controls: unknown control {c!r} (choose from: {', '.join(CONTROLS)})")
    records = load_two_speaker(dialogues)
    if json_out:
        check_output_file(json_out, "json_out")
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    result = speaker_probes(lm, vecs, records, layer, permutations, seed, batch_size, chosen, story_per_emotion)
    save_result(artifact, "speakers", result, also=json_out)
    fam, null = result["families"], result["null_shuffled"]
    out.print(f"layer {result['layer']}: {len(result['emotions'])} emotions, {result['dialogues']} dialogues", soft_wrap=True)
    for key in ("within_present", "within_other", "present_vs_other"):
        out.print(f"{key}: {fam[key]:.3f} (shuffled-label null mean {null[key]['mean']:.3f}, p95 {null[key]['p95']:.3f})",
                  soft_wrap=True)
    out.print(f"story_vs_present: {result['story_vs_present']:.3f} (paper 0.52)  story_vs_other: "
              f"{result['story_vs_other']:.3f} (paper 0.20)  present_vs_other paper 0.15-0.25", soft_wrap=True)
    reg = result["regulation"]["present_cell"]
    if "arousal" in reg:
        out.print(f"regulation (present-speaker pool): arousal r {reg['arousal']['r']:+.3f} (p {reg['arousal']['p_two_sided']:.3f}; "
                  f"paper -0.47)  valence r {reg['valence']['r']:+.3f} (paper 0.07)", soft_wrap=True)
    for name, c in result["controls"].items():
        f = c["families"]
        out.print(f"control {name}: within_present {f['within_present']:.3f} within_other {f['within_other']:.3f} "
                  f"present_vs_other {f['present_vs_other']:.3f} story_vs_present {c['story_vs_present']:.3f} "
                  f"story_vs_other {c['story_vs_other']:.3f}", soft_wrap=True)
    if "story_ha" in result:
        ha = result["story_ha"]
        out.print(f"control story_ha: raw_vs_framed {ha['raw_vs_framed']:.3f} (shuffled null p95 "
                  f"{ha['null_shuffled']['p95']:.3f}) structure {ha['raw_vs_framed_structure']:.3f} "
                  f"({ha['stories']} stories; paper: highly similar)", soft_wrap=True)


def speakers_steer(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    dialogues: Annotated[Optional[list[Path]], typer.Option(help="Two-speaker dialogue JSONL (default: the shipped one).")] = None,
    records: Annotated[Optional[list[Path]], typer.Option(help="Deflection JSONL (default: the shipped one).")] = None,
    layer: LayerOpt = None,
    emotions: Annotated[str, typer.Option(help="Emotions to steer with on the Hi. prompt (present vs other vector).")] = "afraid,angry,nervous,loving",
    strength: Annotated[float, typer.Option(help="Steering strength (× the layer's mean residual norm).")] = 0.1,
    user: Annotated[str, typer.Option(help="The user turn of the speaker prompt (paper: 'Hi, Claude.').")] = "Hi.",
    samples: Annotated[int, typer.Option(help="Samples per prompt and condition (seeds SEED..SEED+n-1).")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per continuation (paper: up to 50).")] = 50,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass when building the vectors.")] = 8,
    json_out: JsonOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Steering with present- vs other-speaker vectors on 'Hi.' and with deflection vectors on the David/Alice
    prompts, each beside a same-norm random direction (paper §6.4)."""
    vecs = load_vectors(artifact)
    _layer(vecs, layer)
    check_strength(strength, param="strength")
    if samples < 1 or batch_size < 1:
        raise ConfigError("--samples and --batch-size must be at least 1")
    sampling = Sampling(temperature=temperature, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed)
    chosen = csv_list(emotions) or []
    if not chosen:
        raise ConfigError("--emotions: give at least one emotion")
    loaded_dialogues, loaded_records = load_two_speaker(dialogues), load_deflection(records)
    if json_out:
        check_output_file(json_out, "json_out")
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    result = steering_experiments(lm, vecs, loaded_dialogues, loaded_records, chosen, layer, strength, sampling,
                                  samples, user, "plain", seed, batch_size)
    save_result(artifact, "speaker_steering", result, also=json_out)
    out.print(f"layer {result['layer']}, strength {result['strength']}, {samples} sample(s) per condition", soft_wrap=True)
    for part, keys in (("speakers", ("own", "reaction")), ("deflection", ("own", "denial"))):
        for name, s in result[part]["summary"].items():
            rates = "  ".join(f"{k} {s[k + '_rate']:.2f} [{s[k + '_ci95'][0]:.2f}, {s[k + '_ci95'][1]:.2f}]" for k in keys)
            va = "  ".join(f"{k} {s['mean_' + k]:.2f}" if s["mean_" + k] is not None else f"{k} —" for k in ("valence", "arousal"))
            out.print(f"{part} {name}: {rates}  {va} (n {s['n']})", soft_wrap=True)


def deflection(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    records: Annotated[Optional[list[Path]], typer.Option(help="Deflection JSONL (default: the shipped one).")] = None,
    layer: LayerOpt = None,
    variance: Annotated[float, typer.Option(help="Story-space variance to orthogonalise against.")] = 0.99,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy reply tokens read as the assistant turn of each antagonistic prompt.")] = 32,
    folds: Annotated[int, typer.Option(help="Mixed-probe folds (10 = 10% held out each).")] = 10,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Records per forward pass.")] = 8,
    json_out: JsonOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Deflection vectors: cosine with story vectors, orthogonalisation against the story space, logit lens,
    antagonistic prompts at user/assistant turns, and the mixed 15-way probe (paper §3.7b-c, §7.3)."""
    vecs = load_vectors(artifact)
    _layer(vecs, layer)
    if not 0 < variance < 1:
        raise ConfigError(f"--variance {variance}: must be in (0, 1)")
    if folds < 2:
        raise ConfigError(f"--folds {folds}: must be at least 2")
    sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    loaded = load_deflection(records)
    if json_out:
        check_output_file(json_out, "json_out")
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    result = deflection_analysis(lm, vecs, loaded, layer, variance, sampling, None, folds, seed, batch_size)
    save_result(artifact, "deflection", result, also=json_out)
    vs, orth, probe = result["vs_story"], result["orthogonalised"], result["mixed_probe"]
    out.print(f"layer {result['layer']}: deflection-vs-story diagonal cosine {vs['diagonal_mean']:.3f} "
              f"(off-diagonal {vs['off_diagonal_mean']:.3f}; paper 0.046)", soft_wrap=True)
    out.print(f"remaining norm after removing {orth['components']} story PCs: {orth['remaining_mean']:.3f} "
              f"(random direction {orth['random_remaining_mean']:.3f}; paper ≈ 0.80)", soft_wrap=True)
    for cond, acc in probe["accuracy"].items():
        paper = probe["paper"].get(cond)
        out.print(f"mixed probe {cond}: {acc['accuracy']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] "
                  f"(null {probe['null_shuffled'][cond]['accuracy']:.3f}, lexical {probe['lexical_speaker_turns'][cond]['accuracy']:.3f}, "
                  f"chance {probe['chance']:.3f}, paper {paper if paper is not None else '—'})", soft_wrap=True)


def shift_command(
    artifact: ArtifactArg,
    base: Annotated[str, typer.Option(help="The base (pretrained) model: alias, .gguf, directory or hub id.")],
    post: Annotated[str, typer.Option(help="The post-trained model the vectors were made on (same architecture and width).")],
    prompts: Annotated[Optional[Path], typer.Option(help="Prompt sets JSON {\"sets\": {name: [prompt, ...]}} (default: the shipped challenging and neutral sets).")] = None,
    layer: LayerOpt = None,
    frame: Annotated[str, typer.Option(help="plain (Human:/Assistant:, the paper's colon) or chat (the post model's template for both).")] = "plain",
    n_boot: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for CIs.")] = 1000,
    top_k: Annotated[int, typer.Option(help="Emotions listed each way.")] = 20,
    seed: SeedOpt = 0,
    json_out: JsonOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Base vs post-trained: the same vectors read at the assistant-turn start on both models (paper §7.4)."""
    vecs = load_vectors(artifact)
    _layer(vecs, layer)
    check_frame(frame)
    if n_boot < 1 or top_k < 1:
        raise ConfigError("--bootstrap and --top-k must be at least 1")
    sets = load_prompt_sets(prompts)
    if json_out:
        check_output_file(json_out, "json_out")
    check_device(device)
    base_lm = load_model(base, dtype=dtype, device=device)
    post_lm = load_model(post, dtype=dtype, device=device)
    check_pair(base_lm, post_lm)
    vecs.check_compatible(post_lm)
    result = shift(vecs, base_lm, post_lm, sets, layer, frame, n_boot, seed, top_k)
    save_result(artifact, "shift", result, also=json_out)
    for name, s in result["sets"].items():
        r = s["structure_r"]
        out.print(f"{name}: {s['prompts']} prompts, structure r {r['pearson']:.3f} (paper "
                  f"{result['paper']['structure_r'].get(name, '—')}), mean |Δ| {s['mean_abs_delta']:.4f}", soft_wrap=True)
    for label, rows in (("increased", result["increased"]), ("decreased", result["decreased"])):
        out.print(f"{label}: " + ", ".join(f"{r['emotion']} {r['delta']:+.4f}" for r in rows[:10]), soft_wrap=True)
    d = result["direction"]
    if d.get("valence"):
        out.print(f"direction: r(Δ, valence) {d['valence']['pearson']:+.3f}, r(Δ, arousal) {d['arousal']['pearson']:+.3f} "
                  f"(paper: toward lower valence and arousal)", soft_wrap=True)
