"""What a comparison bundle holds, on a Compare as the app makes it (magnitude from the weights alone, and Wanda):
only figures with data, the others named once in REPRODUCE.md with why; the per-matrix figures of one matrix
for both runs, the strongest outlier; the Explain page's figures; file names of at most 70 characters. The
catalog's `missing` is checked against what each figure actually draws, so the app, the bundle and the CLI
agree on which figures a run can draw."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_bundle import fake_render
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.outputs import bundle as bundles
from wanda_engine.outputs import explain
from wanda_engine.outputs.figures import catalog, explain_protect, explain_toy, figure_data
from wanda_engine.store.run_store import RunStore, load_run


@pytest.fixture(scope="module")
def compare(tmp_path_factory, tiny_model_dir) -> Path:
    """A run store with the app's Compare on the tiny model: 'magnitude-50' pruned from the weights alone and
    'wanda-50', at the same settings."""
    from wanda_engine.runner.execute import execute_run

    root = tmp_path_factory.mktemp("compare") / "runs"
    saved = os.environ.get("WANDA_CACHE")
    os.environ["WANDA_CACHE"] = str(root.parent / "cache")
    try:
        for method, calibrate in (("magnitude", False), ("wanda", True)):
            prune = PruneConfig(method=method, nsamples=4, seqlen=32, device="cpu", calibrate=calibrate)
            execute_run(RunRequest(model=str(tiny_model_dir), prune=prune, eval=EvalConfig(seqlen=32, windows=2),
                                   name=f"{method}-50"), store=RunStore(root))
    finally:
        os.environ.pop("WANDA_CACHE") if saved is None else os.environ.__setitem__("WANDA_CACHE", saved)
    return root


def runs_of(store: Path, *names: str):
    return [load_run(store / n) for n in names]


def _finite_values(trace) -> int | None:
    """How many finite numbers a trace draws on its value axis (y; x for horizontal bars; z for a heatmap);
    None for a trace that carries no values."""
    key = "z" if trace.type == "heatmap" else "x" if getattr(trace, "orientation", None) == "h" else "y"
    values = getattr(trace, key, None)
    if values is None:
        return None
    numbers = pd.to_numeric(pd.Series(np.ravel(np.asarray(values, dtype=object))), errors="coerce")
    return int(np.isfinite(numbers.to_numpy(dtype=float)).sum())


def drawn_values(fig) -> int:
    """How many finite numbers the figure draws (bars, points, heatmap cells); a figure drawn empty has none."""
    return sum(n for n in map(_finite_values, fig.data) if n)


def _legend_key(trace) -> bool:
    """A trace drawn only as a legend entry (x = y = [None], a name): a key, not a panel."""
    xs, ys = getattr(trace, "x", None), getattr(trace, "y", None)
    return bool(trace.name) and trace.showlegend is not False and xs is not None and ys is not None and \
        all(v is None for v in (*xs, *ys))


def empty_panels(fig) -> list[str]:
    """The traces that draw nothing: a panel left empty inside a figure that otherwise has data."""
    return [trace.name or trace.type for trace in fig.data if _finite_values(trace) == 0 and not _legend_key(trace)]


def test_a_compare_bundle_holds_only_figures_with_data_and_names_the_rest_once(compare):
    runs = runs_of(compare, "magnitude-50", "wanda-50")
    built = bundles.build_bundle(runs, formats=("svg",), render=fake_render)
    drawn = catalog.plan([r.record for r in runs], {r.name: r.records() for r in runs})
    assert drawn.figures and not built.failed
    for spec in drawn.figures:
        fig = spec.build()
        assert drawn_values(fig) > 0 and not empty_panels(fig), (spec.stem, empty_panels(fig))
        assert f"figures/{spec.stem}.svg" in built.files
    # the magnitude run has no activation statistics: its overlap, channel norms, mask crop and block errors
    stems = {n.removeprefix("figures/").removesuffix(".svg") for n in built.files if n.startswith("figures/")}
    for missing in ("overlap", "channels", "mask_crop", "blocks"):
        assert not any(s.startswith(f"magnitude-50-{missing}") for s in stems), missing
        assert any(s.startswith(f"wanda-50-{missing}") for s in stems), missing
    card = built.files["REPRODUCE.md"].decode()
    left_out = card.split("## Figures left out", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in left_out.splitlines() if line.startswith("- ")]
    for omitted in built.omitted:  # each named once, with its run and why
        named = [line for line in lines if line.startswith(f"- {omitted.run}") and omitted.title in line]
        assert len(named) == 1 and omitted.why in named[0], omitted
    assert "magnitude-50 (magnitude 50%)" in left_out and "pruned from the weights alone" in left_out


@pytest.mark.parametrize("run_name", ["magnitude-50", "wanda-50"])
def test_the_catalog_knows_which_figures_a_run_can_draw(compare, run_name):
    """For every figure of the catalog: `missing` says '' exactly when the figure drawn has data in every panel."""
    run = load_run(compare / run_name)
    records = run.records()
    story = catalog.story_matrix([load_run(compare / n).record for n in ("magnitude-50", "wanda-50")],
                                 {n: load_run(compare / n).records() for n in ("magnitude-50", "wanda-50")})
    matrix = story.of(records)
    for which in catalog.FIGURES:
        why = catalog.missing(which, run.record, records, matrix=matrix if which in catalog.MATRIX_FIGURES else None)
        fig = catalog.build_figure(which, run.record, matrices=records, matrix=matrix)
        has_data = drawn_values(fig) > 0 and not empty_panels(fig)
        assert has_data == (why == ""), (which, why, empty_panels(fig))


def test_per_matrix_figures_show_the_same_matrix_for_both_runs_the_strongest_outlier(compare):
    runs = runs_of(compare, "magnitude-50", "wanda-50")
    wanda = runs[1].records()
    ratios = [m.channels["max_over_median"] if m.channels else -1.0 for m in wanda]
    strongest = wanda[int(np.argmax(ratios))]  # the plain reference: the largest max/median channel norm
    for order in (runs, runs[::-1]):
        drawn = catalog.plan([r.record for r in order], {r.name: r.records() for r in order})
        suffixes = {run.name: {re.sub(rf"^{run.name}-[a-z_]+-", "", s.stem) for s in drawn.figures
                               if re.match(rf"{run.name}-[a-z_]+-b\d+-", s.stem)} for run in order}
        assert suffixes["magnitude-50"] == suffixes["wanda-50"] == {f"b{strongest.block}-{strongest.name}"}
        assert any(f"block {strongest.block} {strongest.name} in every run" in note for note in drawn.notes)


def test_the_explain_figures_join_a_comparison_bundle(compare):
    runs = runs_of(compare, "magnitude-50", "wanda-50")
    built = bundles.build_bundle(runs, formats=("svg",), render=fake_render)
    for stem in ("explain-toy", "explain-outliers", "explain-cuts", "explain-error-share"):
        assert f"figures/{stem}.svg" in built.files, stem
    toy = figure_data(explain_toy(explain.toy(explain.TOY_SCALE)))  # the page's default setting
    shipped = pd.read_csv(pd.io.common.BytesIO(built.files["data/explain-toy.csv"]))
    pd.testing.assert_frame_equal(shipped, pd.read_csv(pd.io.common.StringIO(toy.to_csv(index=False))))
    # the protection test was not run: left out and said so; once run at these settings, it is drawn
    assert "figures/explain-protect.svg" not in built.files
    assert "the protection test was not run" in built.files["REPRODUCE.md"].decode()
    magnitude = runs[0].record
    protected = dataclasses.replace(magnitude, name="protect-1pct", ppl=magnitude.ppl * 0.9, request=dataclasses.replace(
        magnitude.request, prune=dataclasses.replace(magnitude.request.prune, protect_channels=0.01, calibrate=True)))
    with_test = bundles.build_bundle(runs, formats=("svg",), render=fake_render,
                                     model_runs=[r.record for r in runs] + [protected])
    expected = explain_protect(explain.intervention(magnitude, runs[1].record, [protected]))
    assert with_test.files["figures/explain-protect.svg"] == fake_render(expected, "svg")
    assert "protect-1pct" in with_test.files["REPRODUCE.md"].decode()
    alone = bundles.build_bundle(runs[:1], formats=("svg",), render=fake_render)
    assert not any("explain" in n for n in alone.files)  # one run is no comparison


def test_the_explain_page_opens_at_the_toy_setting_the_bundle_draws(app_env):
    from test_app import goto, new_app, no_exceptions

    at = goto(new_app(), "explain")
    no_exceptions(at)
    assert at.slider(key="x_outlier").value == explain.TOY_SCALE


def test_every_file_name_in_a_bundle_is_at_most_70_characters(compare, tmp_path):
    long_names = {"magnitude-50": "20261206-101530-magnitude-protect-channels-0.01-unstructured-calibrated-on-emma",
                  "wanda-50": "20261206-101545-wanda-variant-protect-channels-0.01-unstructured-calibrated-on-emma"}
    for old, new in long_names.items():
        shutil.copytree(compare / old, tmp_path / new)
    runs = [load_run(tmp_path / n) for n in long_names.values()]
    built = bundles.build_bundle(runs, formats=("pdf", "png", "svg"), render=fake_render)
    names = [part for path in built.files for part in Path(path).parts]
    assert max(len(n) for n in names) <= bundles.MAX_FILE_NAME, max(names, key=len)
    figures = [n for n in built.files if n.startswith("figures/")]
    assert len(set(figures)) == len(figures) == 3 * len(built.rendered)
    card = built.files["REPRODUCE.md"].decode()
    for calib in re.findall(r"--calib (\S+)", card):
        assert calib in built.files  # the card's commands point at the shortened files
    # a shortened name keeps the figure it names at its end, and two long names stay apart
    a, b = bundles.file_stem("x" * 100 + "-mask_crop-b11-mlp.down_proj"), bundles.file_stem("y" * 100 + "-mask_crop")
    assert len(a) + 4 <= bundles.MAX_FILE_NAME and a.endswith("mlp.down_proj") and a != b


def test_the_runs_page_offers_only_the_figures_a_run_can_draw_and_says_why_not(app_env, compare, monkeypatch):
    """AppTest: the Runs page's picker and Export all ask the catalog (kaleido stood in for: the page is under test)."""
    from test_app import goto, new_app, no_exceptions

    from wanda_engine.outputs import export

    shutil.copytree(compare / "magnitude-50", app_env.runs / "magnitude-50")
    monkeypatch.setattr(export, "export_figure", lambda fig, fmt, **kw: fake_render(fig, fmt))
    monkeypatch.setattr(export, "start_export_server", lambda: None)
    at = new_app()
    at.session_state["current_run"] = "magnitude-50"
    goto(at, "runs")
    no_exceptions(at)
    offered = at.selectbox(key="export_figure").options
    record = load_run(app_env.runs / "magnitude-50")
    for which, title in catalog.FIGURES.items():
        assert (title in offered) == (not catalog.missing(which, record.record, record.records())), which
    assert not {catalog.FIGURES[w] for w in ("channels", "mask_crop", "overlap", "blocks")} & set(offered)
    said = " ".join(c.value for c in at.caption)
    assert "Not drawn for this run" in said and "pruned from the weights alone" in said
    dpi = at.number_input(key="export_all_dpi")
    assert (dpi.min, dpi.max) == export.DPI_RANGE  # the app offers exactly the engine's range
    at.button(key="export_all_all").click().run()
    no_exceptions(at)
    omitted = at.session_state["_export_all_bundle"][4]
    assert omitted and all(o.title in " ".join(c.value for c in at.caption) for o in omitted)
