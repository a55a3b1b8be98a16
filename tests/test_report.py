"""emovec.report and the analyze/report commands: every section renders, hostile text is escaped, the
page loads in headless Chromium with no console error and no network request, and `report` shows the
numbers `analyze --json` wrote."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from emovec import report as report_mod
from emovec.analysis.suite import AnalysisOptions, run_analysis
from emovec.artifact import save_result
from emovec.cli import app
from tests.builders import make_llama, small_vectors, write_docs
from tests.headless_chromium import chromium_binary, open_page

HOSTILE = "<script>alert('pwn')</script><img src=x onerror=alert(1)>"
HOSTILE_PROBES = f"""
numbers:
  - name: "{HOSTILE} name"
    template: "I took {{X}} pills {HOSTILE}"
    values: [1, 2, 4, 8]
    expect: {{afraid: up}}
scenarios:
  - {{label: "{HOSTILE}", target: afraid, prompt: "Someone is at the door {HOSTILE}"}}
  - {{label: calm one, target: calm, prompt: "Tea and rain."}}
"""
SUBSECTIONS = ("a-summary", "a-geometry", "a-norms", "a-numbers", "a-scenarios", "a-lens", "a-passages", "a-layers")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny artifact with an analysis whose passages, probe names and prompts carry hostile markup."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = tmp_path_factory.mktemp("report")
        lm = make_llama()
        vecs = small_vectors(lm, planted_layer=2)
        vecs.save(d / "art")
        (d / "probes.yaml").write_text(HOSTILE_PROBES)
        docs = write_docs(d / "docs")
        (docs / "z.txt").write_text(HOSTILE * 2)
        opts = AnalysisOptions(passages=str(docs), max_docs=5, n_boot=50, top_k=3, probes=str(d / "probes.yaml"))
        result = run_analysis(vecs, lm, opts)
        save_result(d / "art", "analysis", result)
        html_path, _ = report_mod.render_report(d / "art", d / "report.html")
        return {"dir": d, "lm": lm, "vecs": vecs, "result": result, "html": html_path.read_text("utf-8"),
                "path": html_path, "options": opts}
    finally:
        torch.set_num_threads(before)


def test_report_renders_every_analysis_part(built):
    html = built["html"]
    for anchor in SUBSECTIONS:
        assert f'id="{anchor}"' in html
    assert html.count('src="data:image/png;base64,') == 7  # heatmap, PCA, numbers, scenarios, sweep ×2, RSA
    assert "Steering validation (missing: run <code>emovec validate-steering ARTIFACT</code>)" in html
    assert "Preferences (missing: run <code>emovec preferences ARTIFACT</code>)" in html
    r = built["result"]
    assert f"{r['norms']['pc1_valence_r']:.2f}" in html and "0.81 (n = 45)" in html  # ours beside the paper's
    assert "MODEL-JUDGE ratings (not human data)" in html


def test_report_escapes_hostile_text(built):
    html = built["html"]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;" in html  # in scenario label / template / passages
    assert len(re.findall(r"<script\b", html)) == 1  # only the report's own inline script
    # the hostile document really reached the passages, as data
    pieces = ["".join(p["pieces"]) for e in built["result"]["passages"]["emotions"].values() for p in e["passages"]]
    assert any("<" in p for p in pieces)


def test_sections_render_escape_and_survive_malformed_results(built, monkeypatch, tmp_path):
    art = built["dir"] / "art"
    save_result(art, "preferences", {"title": HOSTILE})
    save_result(art, "steering_validation", {"prompts": "not a list"})
    try:
        monkeypatch.setattr(report_mod, "SECTIONS", (
            report_mod.Section("preferences", "Preferences", fake_section, "emovec preferences ARTIFACT"),
            report_mod.Section("steering_validation", "Steering validation", report_mod.steering_section,
                               "emovec validate-steering ARTIFACT")))
        path, absent = report_mod.render_report(art, tmp_path / "r.html")
    finally:
        (art / "results" / "preferences.json").unlink()
        (art / "results" / "steering_validation.json").unlink()
    html = path.read_text("utf-8")
    assert absent == [] and '<section id="preferences">' in html and '<p class="fake">&lt;script&gt;' in html
    assert '<section id="steering-validation">' in html and "results file for this section is malformed" in html


def test_stale_results_are_not_shown_as_current(built, tmp_path):
    """Results computed from other vectors (the artifact was re-extracted) are left out and named stale."""
    art = tmp_path / "art"
    built["vecs"].save(art)
    save_result(art, "analysis", built["result"])
    assert [a.why for a in report_mod.render_report(art, tmp_path / "a.html")[1]] == ["missing"] * (len(report_mod.SECTIONS) - 1)
    other = small_vectors(built["lm"], planted_layer=1, seed=3)
    other.save(art)  # new vectors, old results
    path, absent = report_mod.render_report(art, tmp_path / "b.html")
    assert ("Validation and geometry", "stale") in [(a.title, a.why) for a in absent]
    html = path.read_text("utf-8")
    assert 'id="a-summary"' not in html and "computed from other vectors" in html


def fake_section(result: dict) -> str:
    from markupsafe import escape

    return f'<p class="fake">{escape(result["title"])}</p>'


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (.ci/run installs it)")
def test_report_loads_in_headless_chromium_offline_without_errors(built):
    log = open_page(built["path"], {
        "images_ok": "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
        "images": "document.images.length",
        "filtered": "(() => { const f = document.getElementById('passage-filter'); f.value = 'afraid';"
                    " f.dispatchEvent(new Event('input'));"
                    " return Array.from(document.querySelectorAll('details.passages'))"
                    ".filter(d => d.style.display !== 'none').map(d => d.dataset.emotion); })()",
        "injected": "document.querySelectorAll('img[src=x]').length + document.scripts.length",
    })
    assert log.loaded
    assert log.exceptions == [] and log.console_errors == []
    assert log.network_requests == []
    assert log.values["images_ok"] is True and log.values["images"] == 7
    assert log.values["filtered"] == ["afraid"]
    assert log.values["injected"] == 1  # no injected <img>, one script (ours)


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (.ci/run installs it)")
def test_chromium_check_catches_errors_and_requests(tmp_path):
    """The checker itself can fail: a page with a remote image and a broken script is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><meta charset="utf-8"><img src="http://example.invalid/x.png">'
                   "<script>notDefined();</script>")
    log = open_page(bad)
    assert log.network_requests == ["http://example.invalid/x.png"]
    assert any("notDefined" in e for e in log.exceptions)


def test_cli_report_shows_the_numbers_analyze_wrote(built, monkeypatch, tmp_path):

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli_round_trip(built, monkeypatch, tmp_path)
    finally:
        torch.set_num_threads(before)


def cli_round_trip(built, monkeypatch, tmp_path):
    """analyze --json, then report (which never loads a model), then analyze with a changed option."""
    import emovec.cli.common

    monkeypatch.setattr(emovec.cli.common, "load_model", lambda *a, **k: built["lm"])
    art = tmp_path / "art"
    built["vecs"].save(art)
    runner = CliRunner()
    docs = str(built["dir"] / "docs")
    res = runner.invoke(app, ["analyze", str(art), "--model", "tiny", "--json", str(tmp_path / "out.json"),
                              "--passages", docs, "--max-docs", "3", "--bootstrap", "40", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "out.json").read_text())
    stored = json.loads((art / "results" / "analysis.json").read_text())
    assert stored.pop("vectors_sha256").startswith("sha256:") and written.pop("vectors_sha256") and written == stored
    assert written["layer"] == 2 and written["norms"]["pc1_valence_r"] > 0.9
    assert "pc2_arousal_r" in written["norms"]

    def fail(*a, **k):
        raise AssertionError("report must reuse the current analysis, not rerun it")

    monkeypatch.setattr(emovec.cli.common, "load_model", fail)
    res = runner.invoke(app, ["report", str(art), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and "Validation and geometry" not in res.output  # nothing missing or stale
    html = (tmp_path / "r.html").read_text("utf-8")
    n = written["norms"]["human"]
    assert f"{n['valence']['pearson']:.2f} [{n['valence']['pearson_ci'][0]:.2f}, {n['valence']['pearson_ci'][1]:.2f}]" in html
    assert f"{n['arousal']['pearson']:.2f} [{n['arousal']['pearson_ci'][0]:.2f}" in html

    monkeypatch.setattr(emovec.cli.common, "load_model", lambda *a, **k: built["lm"])
    res = runner.invoke(app, ["analyze", str(art), "--model", "tiny", "--layer", "1", "--no-sweep"])
    assert res.exit_code == 0, res.output
    again = json.loads((art / "results" / "analysis.json").read_text())
    assert again["layer"] == 1 and again["options"]["max_docs"] == 3  # unset flags keep the stored options


@pytest.mark.parametrize("args, message", [(["analyze", "{tmp}"], "not an emovec artifact"),
                                           (["analyze", "{tmp}", "--layer", "top"], "expected a layer number or 'recommended'"),
                                           (["analyze", "{tmp}", "--frame", "xml"], "unknown frame 'xml'"),
                                           (["report", "{tmp}", "--frame", "xml"], "No such option: --frame")])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    from emovec.cli import main

    monkeypatch.setattr("sys.argv", ["emovec", *[a.format(tmp=tmp_path) for a in args]])
    with pytest.raises(SystemExit) as exc:
        main()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
