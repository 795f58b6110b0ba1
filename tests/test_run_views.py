"""What the app shows of a run comes from its typed record: one method label everywhere (an OWL run keeps
its 'owl-' prefix in the sidebar, the overview and the Runs table), unreadable runs are still listed, and
"Re-run and save" refuses a folder outside the run store's saved-models folder, queueing nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from test_app import errors, goto, new_app, no_exceptions  # noqa: E402

from app.runs_table import runs_table  # noqa: E402
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest  # noqa: E402
from wanda_engine.store.run_store import RunStore  # noqa: E402


def write_run(root: Path, name: str, created: str, ppl: float, **prune) -> None:
    """A finished run as the runner leaves it, without per-matrix records (none are needed here)."""
    request = RunRequest(model="tiny", prune=PruneConfig(method="wanda", sparsity=0.5, nsamples=4, seqlen=32, **prune),
                         eval=EvalConfig(seqlen=64, windows=2))
    meta = {"status": "complete", "name": name, "created": created, "config": request.to_dict(),
            "model": {"source": "tiny", "label": "tiny-llama"},
            "calibration": {"source": "default", "label": "austen:emma", "nsamples": 4, "seqlen": 32, "seed": 0},
            "sparsity": 0.5, "layers": [], "blocks": [], "ppl": ppl, "ppl_dense": 10.0, "timings": {"total_s": 1.0},
            "eval": {"dataset": "austen:prideprejudice", "seqlen": 64, "windows": 2, "tokens": 128}}
    (root / name).mkdir(parents=True)
    (root / name / "run.json").write_text(json.dumps(meta))
    (root / name / "records.json").write_text("[]")


@pytest.fixture
def owl_and_uniform(app_env) -> Path:
    write_run(app_env.runs, "uniform-50", "2025-01-01T00:00:00", 20.0)
    write_run(app_env.runs, "owl-50", "2025-01-02T00:00:00", 19.0, layerwise="owl")
    return app_env.runs


def test_owl_and_uniform_runs_at_one_sparsity_are_told_apart_everywhere(owl_and_uniform):
    from app import ui

    runs = {r.name: r for r in RunStore(owl_and_uniform).list()}
    assert ui.run_label(runs["owl-50"]).startswith("owl-wanda 50% · ")
    assert ui.run_label(runs["uniform-50"]).startswith("wanda 50% · ")

    at = new_app()  # the Prune page: the newest run is current, the other its comparison
    no_exceptions(at)
    sidebar = [at.selectbox(key=k).options for k in ("current_run", "compare_run")]
    assert all(any(o.startswith("owl-wanda 50% ") for o in opts) and any(o.startswith("wanda 50% ") for o in opts)
               for opts in sidebar), sidebar
    metrics = {m.label for m in at.metric}
    assert {"owl-wanda 50% perplexity", "wanda 50% perplexity"} <= metrics, metrics

    at = goto(at, "runs")
    no_exceptions(at)
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["owl-50", "method"] == "owl-wanda" and table.loc["uniform-50", "method"] == "wanda"


def test_runs_table_lists_an_unreadable_run_with_its_status_and_error(runs_dir):
    write_run(runs_dir, "good", "2025-01-01T00:00:00", 20.0)
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "run.json").write_text("{not json")
    runs = RunStore(runs_dir).list()
    assert {r.name: r.record is None for r in runs} == {"good": False, "broken": True}
    table = runs_table(runs).set_index("name")
    assert table.loc["broken", "status"] == "✘ corrupt" and "unreadable run.json" in table.loc["broken", "error"]
    assert pd.isna(table.loc["broken", "perplexity"]) and pd.isna(table.loc["broken", "method"])
    assert table.loc["good", "perplexity"] == 20.0 and table.loc["good", "error"] == ""


@pytest.mark.parametrize("where", ["elsewhere", "escape"])
def test_rerun_and_save_refuses_a_folder_outside_the_saved_models_folder(owl_and_uniform, tmp_path, where):
    from app import ui

    outside = tmp_path / "elsewhere" / "model"
    folder = str(outside) if where == "elsewhere" else str(ui.store().saved_models_dir / ".." / ".." / "model")
    at = goto(new_app(), "runs")
    at.text_input(key="save_folder").set_value(folder)
    next(b for b in at.button if b.label == "Re-run and save").click().run()
    no_exceptions(at)
    assert len(errors(at)) == 1 and "saved model folder" in errors(at)[0], errors(at)
    assert not at.success
    runner = ui.job_runner()
    assert runner.current() is None and runner.queued() == [] and runner.history() == []
    assert not outside.exists() and not (tmp_path / "model").exists()
