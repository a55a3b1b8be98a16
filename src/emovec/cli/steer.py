"""`emovec steer`, `chat`, `validate-steering` and `export`: use the vectors to move the model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from emovec.artifact import check_output_dir, check_output_file, locked, results_dir, save_result, write_json_atomic
from emovec.chat import HELP, ChatSession, Notice
from emovec.cli.common import (AllowHubOpt, ArtifactArg, BoundModelOpt, DeviceOpt, DtypeOpt, EmotionSpecOpt, SeedOpt,
                               TemperatureOpt, TopPOpt, artifact_layers, bind_model, blend_label, check_weights,
                               csv_list, error_line, load_vectors, out, preflight, print_error)
from emovec.errors import EmovecError
from emovec.export import export_control_vector, read_control_vector
from emovec.models import check_context
from emovec.prompts import check_frame, encode_prompt, render_prompt
from emovec.sampling import Sampling
from emovec.steering import check_strength, parse_sweep, parse_weights, scale_weights, steered_continuations
from emovec.steering_validation import (N_RANDOM, RESULT_NAME, VARIANTS, check_variants, validate_steering,
                                       variant_directions)

VariantOpt = Annotated[str, typer.Option(help=f"Vectors to steer with: {', '.join(VARIANTS)} (see validate-steering's recommendation).")]


def steer(
    artifact: ArtifactArg,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message (or text, with --frame plain).")],
    emotion: EmotionSpecOpt = None,
    model: BoundModelOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to steer, e.g. 20 or 18,20 (default: the artifact's default layer).")] = None,
    positions: Annotated[str, typer.Option(help="all, prompt or generated.")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per continuation.")] = 48,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    sweep: Annotated[Optional[str], typer.Option(help="Strengths START:STOP:COUNT or a list; the blend is rescaled so its largest |strength| is each value.")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the continuations here as JSON.")] = None,
    variant: VariantOpt = "denoised",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Baseline and steered continuations of one prompt, side by side, with the same seed (paper §6)."""
    weights = parse_weights(emotion or [])
    strengths = parse_sweep(sweep) if sweep else None
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    check_frame(frame)
    check_variants([variant], param="variant")
    if json_out:
        check_output_file(json_out, "json_out")
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    chosen = artifact_layers(vecs, layers)
    blends = [{e: 0.0 for e in weights}] + ([scale_weights(weights, s) for s in strengths] if strengths else [weights])
    [vecs.directions(b, chosen) for b in blends if any(b.values())]  # bad strengths fail before the model loads
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    directions = [variant_directions(lm, vecs, b, chosen or None, variant) if any(b.values()) else None for b in blends]
    ids = encode_prompt(lm, render_prompt(lm, prompt, frame), frame)
    check_context(lm, len(ids) + max_new_tokens)
    outs = steered_continuations(lm, ids, directions, sampling, positions)
    texts = [lm.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]
    where = f"layers {','.join(map(str, chosen))}" if chosen else f"layer {vecs.default_layer}"
    out.print(f"prompt: {prompt!r}   {where}   vectors: {variant}   positions: {positions}   seed: {seed}   temperature: {temperature}",
              highlight=False, markup=False, soft_wrap=True)
    table = Table(show_lines=True)
    if strengths is None:
        table.add_column("baseline", ratio=1, overflow="fold")
        table.add_column(f"steered: {blend_label(weights)}", ratio=1, overflow="fold")
        table.add_row(Text(texts[0]), Text(texts[1]))
    else:
        table.add_column("strengths", no_wrap=True)
        table.add_column("continuation", overflow="fold")
        for blend, text in zip(blends, texts):
            table.add_row(blend_label(blend), Text(text))
    out.print(table)
    if json_out:
        write_json_atomic(json_out, {"prompt": prompt, "frame": frame, "layers": chosen or [vecs.default_layer],
                                     "variant": variant, "positions": positions, "sampling": sampling.__dict__,
                                     "runs": [{"weights": b, "text": t} for b, t in zip(blends, texts)]})


def chat(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    emotion: EmotionSpecOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to steer (default: the artifact's default layer).")] = None,
    read_layer: Annotated[Optional[int], typer.Option(help="Layer of the emotion read-out (default: the artifact's default layer).")] = None,
    positions: Annotated[str, typer.Option(help="all, prompt or generated.")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 96,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    system: Annotated[Optional[str], typer.Option(help="System prompt (default: the template's own).")] = None,
    variant: VariantOpt = "denoised",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Talk to the model (one message per line on stdin) with a per-turn emotion read-out; /steer, /off, /quit."""
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    weights = parse_weights(emotion) if emotion else {}
    check_variants([variant], param="variant")
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    chosen = artifact_layers(vecs, layers)
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    session = ChatSession(lm, vecs, sampling, chosen, positions, read_layer, system, variant=variant)
    session.set_steering(weights)
    interactive = sys.stdin.isatty()
    out.print(f"chatting with {lm.spec.id}; read-out at layer {session.read_layer}. {HELP}", soft_wrap=True)
    while True:
        if interactive:
            out.print("you> ", end="", style="bold")
        line = sys.stdin.readline()
        if not line:
            break
        try:
            result = session.handle(line)
        except EmovecError as exc:
            print_error(error_line(exc).replace("--emotion", "/steer"))
            continue
        if isinstance(result, Notice):
            out.print(result.text, soft_wrap=True)
            if result.quit:
                break
        elif result is not None:
            steering = f" [steered {blend_label(result.steering)}]" if result.steering else ""
            out.print(f"assistant{steering}: {result.reply}", soft_wrap=True)
            fmt = lambda top: ", ".join(f"{e} {s:+.3f}" for e, s in top)  # noqa: E731
            out.print(f"  read-out @L{session.read_layer}: turn start: {fmt(result.at_start)} | reply mean: "
                      f"{fmt(result.over_reply)}", style="dim", soft_wrap=True)


def validate_steering_command(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    layer: Annotated[Optional[int], typer.Option(help="Layer to steer (default: the artifact's default layer).")] = None,
    strength: Annotated[float, typer.Option(help="Strength × the layer's mean residual norm (paper: 0.5).")] = 0.5,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions (default: the 12 focal ones in the artifact).")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result here.")] = None,
    variants: Annotated[str, typer.Option(help=f"Vector variants compared side by side (comma-separated; default: {','.join(VARIANTS)}); the first fills the main matrix.")] = ",".join(VARIANTS),
    random: Annotated[int, typer.Option("--random", help="Random directions of the same norm (the null).", min=0)] = N_RANDOM,
    seed: Annotated[int, typer.Option(help="Seed of the random directions and the bootstrap.")] = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Paper Fig 52: Δ log-prob of each emotion word under each emotion's vector; writes ARTIFACT/results/steering_validation.json."""
    check_strength(strength, "--strength", "strength")
    check_frame(frame)
    chosen_variants = check_variants(csv_list(variants) or [])
    if json_out:
        check_output_file(json_out, "json_out")
    vecs = load_vectors(artifact)
    artifact_layers(vecs, None if layer is None else str(layer))
    check_weights(vecs, dict.fromkeys(csv_list(emotions) or [], 0.0))
    check_output_dir(results_dir(artifact))
    preflight(vecs, model, device, allow_hub)
    with locked(artifact):
        lm = bind_model(vecs, model, dtype, device, allow_hub)
        result = validate_steering(lm, vecs, layer, strength, csv_list(emotions), frame, variants=chosen_variants,
                                   n_random=random, seed=seed)
        path = save_result(artifact, RESULT_NAME, result, json_out)
    names = list(result["emotions"])
    out.print(f"Δ log-prob of each word (columns) under each {result['primary_variant']} vector (rows), mean over "
              f"prompts; layer {result['layer']}, "
              f"strength {strength}; * marks the diagonal", soft_wrap=True)
    out.print(" " * 10 + "".join(f"{n[:6]:>8}" for n in names), soft_wrap=True)
    for i, (name, row) in enumerate(zip(names, result["delta"])):
        cells = "".join(f"{v:+7.2f}{'*' if j == i else ' '}" for j, v in enumerate(row))
        out.print(f"{name[:10]:<10}{cells}", soft_wrap=True)
    dom = result["dominance"]
    out.print(f"diagonal is the row max in {dom['rows_diagonal_max']:.0%} of vectors and the column max in "
              f"{dom['columns_diagonal_max']:.0%} of words; mean diagonal {dom['diagonal_mean']:+.2f} vs off-diagonal "
              f"{dom['off_diagonal_mean']:+.2f}")
    print_variants(result)
    out.print(f"wrote {path}", soft_wrap=True)


def print_variants(result: dict) -> None:
    """The variants side by side with the random-direction null, and the recommendation."""
    table = Table(title=f"steering by vector variant · {result['random']['draws']} random directions of the same norm")
    for col in ("variant", "margin [95% CI]", "rows diag max", "beat random"):
        table.add_column(col, overflow="fold")
    n = len(result["emotions"])
    for name, v in result["variants"].items():
        ci = f" [{v['margin_ci'][0]:+.2f}, {v['margin_ci'][1]:+.2f}]" if v.get("margin_ci") else ""
        table.add_row(name, f"{v['margin']:+.2f}{ci}", f"{v['dominance']['rows_diagonal_max']:.0%}",
                      f"{v['emotions_beating_random']} / {n}")
    out.print(table)
    out.print("beat random: emotions whose own-word specificity beats the random directions' (p < 0.05)")
    rec = result["recommended"]
    out.print(f"recommended steering variant: {rec['variant']} ({rec['reason']}); rule: {rec['rule']}. Steering "
              f"commands still use {rec['library_default']} unless given --variant.", soft_wrap=True)


def export(
    artifact: ArtifactArg,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="GGUF file to write.")],
    emotion: EmotionSpecOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to include, e.g. 20 or 16-22 (default: the artifact's default layer; not 0).")] = None,
) -> None:
    """Write a llama.cpp control vector (GGUF) for an emotion or a blend; load it with --control-vector-scaled."""
    weights = parse_weights(emotion or [])
    check_output_file(out_file)
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    written = export_control_vector(vecs, weights, out_file, artifact_layers(vecs, layers))
    cv = read_control_vector(written)
    out.print(f"wrote {written}: {blend_label(weights)} at layers {sorted(cv.directions)} for {cv.model_hint} "
              f"({vecs.model.id}); read back and verified", soft_wrap=True)
    out.print(f"llama.cpp: llama-cli -m MODEL.gguf --control-vector-scaled {written}:1.0 "
              f"--control-vector-layer-range {min(cv.directions)} {max(cv.directions)}", soft_wrap=True)
