"""The app's Shrink and Generate pages under AppTest on a tiny model: a structure remover's run shows what it removed
(its figures, each exportable), the frontier of every run of the model with its table, the pages that show matrices
say why a structure run has none; the Shrink form queues a structured run whose live progress and views render; the
Generate page queues a generation and shows each model's text and tokens/s."""
from __future__ import annotations

import pytest
from test_app import chart_titles, errors, goto, new_app, no_exceptions, use_tiny_model, wait_jobs

from wanda_engine.cli.main import main
from wanda_engine.store.generation_record import list_generations
from wanda_engine.store.run_store import RunStore

FAST = ["--nsamples", "4", "--seqlen", "32", "--eval-windows", "2", "--eval-seqlen", "32", "--quiet",
        "--speed-decode-tokens", "2", "--speed-repeats", "1"]


@pytest.fixture
def shrunk(app_env):
    """The store holds a FLAP run (global allocation), a depth run and a Wanda run with its speed, and a generation."""
    for name, args in (("flap", ["--method", "flap", "--ratio", "0.3", "--allocation", "global"]),
                       ("depth", ["--structure", "depth", "--ratio", "0.5"]),
                       ("wanda", ["--method", "wanda", "--speed"])):
        assert main(["prune", "--model", str(app_env.model), *FAST, "--out", str(app_env.runs / name), *args]) == 0
    assert main(["generate", "--runs-dir", str(app_env.runs), "--runs", "wanda,flap", "--prompt", "Emma Woodhouse,",
                 "--max-new-tokens", "3", "--quiet", "--name", "seen"]) == 0
    return app_env


def current(at, name: str):
    at.selectbox(key="current_run").set_value(name)
    return at.run()


def test_the_shrink_page_shows_what_a_run_removed_and_the_frontier(shrunk):
    at = current(new_app(), "flap")
    goto(at, "shrink")
    no_exceptions(at)
    assert {m.label for m in at.metric} >= {"Block parameters removed", "Model parameters", "Perplexity",
                                           "Prefill speed-up"}
    titles = chart_titles(at)
    for title in ("Attention heads kept in each block", "Share of attention heads and MLP channels",
                  "Score distributions", "Perplexity against measured prefill speed-up"):
        assert any(t.startswith(title) for t in titles), (title, titles)
    captions = " ".join(c.value for c in at.caption)
    assert "a width run removes heads and channels, no whole block" in captions  # named, not drawn empty
    assert "whole KV groups" in captions and "3 finished runs" in captions
    assert any(e.label.startswith("Export: attention heads kept") for e in at.expander)
    downloads = [b.proto.label for b in at.get("download_button")]
    assert [d for d in downloads if d.startswith("Table as")] == ["Table as LaTeX", "Table as Markdown", "Table as CSV"]
    at.radio(key="shrink_axis").set_value("params").run()
    assert any(t.startswith("Perplexity against decoder-block parameters kept") for t in chart_titles(at))
    at = current(at, "depth")
    no_exceptions(at)
    assert any(t.startswith("Block influence") for t in chart_titles(at))
    at = current(at, "wanda")
    assert any("zeroes weights" in i.value for i in at.info)


def test_the_matrix_pages_say_why_a_structure_run_has_no_matrices(shrunk):
    at = current(new_app(), "flap")
    for page in ("layers", "masks", "sparsity"):
        goto(at, page)
        no_exceptions(at)
        assert any("removed whole heads" in i.value and "Shrink" in i.value for i in at.info), page
    goto(at, "runs")
    no_exceptions(at)
    offered = at.selectbox(key="export_figure").options
    assert "Attention heads kept in each block" in offered and "Mask crop of one matrix" not in offered


def test_the_generate_page_shows_each_models_text_and_tokens_per_s(shrunk):
    at = goto(new_app(), "generate")
    no_exceptions(at)
    record = list_generations(shrunk.runs)[0]
    texts = [t.value for t in at.text]
    assert [o.text.strip() or "(nothing: the first token ended the text)" for o in record.outputs] == texts
    captions = " ".join(c.value for c in at.caption)
    for out in record.outputs:
        assert f"{out.tokens_per_s:.1f} tokens/s" in captions
    assert "mask checked" in captions and record.measured_on() in captions
    at.text_area(key="gen_prompt").set_value("   ").run()
    at.button(key="b_generate").click().run()
    assert any("needs a prompt" in e for e in errors(at))  # one sentence, nothing queued
    from app import ui

    assert not ui.job_runner().busy


@pytest.mark.slow  # AppTest runs the jobs in the worker process
def test_the_shrink_form_runs_a_structured_run_and_generate_runs_it(app_env):
    at = use_tiny_model(new_app(), app_env.model)
    goto(at, "shrink")
    at.selectbox(key="s_method").set_value("wanda-sp")
    at.slider(key="s_ratio").set_value(0.3)
    at.number_input(key="s_decode_tokens").set_value(2)
    at.number_input(key="s_repeats").set_value(1).run()
    at.button(key="b_shrink").click().run()
    no_exceptions(at)
    assert not errors(at), errors(at)
    at = wait_jobs(at)
    run = RunStore(app_env.runs).list()[0]
    assert run.complete and run.record.structure.method == "wanda-sp" and run.record.speed is not None
    assert at.session_state["current_run"] == run.name  # the finished run is shown
    assert any(t.startswith("Attention heads kept") for t in chart_titles(at))
    assert any("Finished" in s.value for s in at.success)
    goto(at, "generate")
    at.multiselect(key="gen_runs").set_value([run.name])
    at.number_input(key="gen_tokens").set_value(3).run()
    at.button(key="b_generate").click().run()
    at = wait_jobs(at)
    no_exceptions(at)
    made = list_generations(app_env.runs)
    assert len(made) == 1 and [o.model for o in made[0].outputs] == ["dense", run.name]
    assert [t.value for t in at.text][-1] == (made[0].outputs[-1].text.strip() or
                                              "(nothing: the first token ended the text)")
    finished = [s.value for s in at.success if s.value.startswith("Finished **generate")]
    assert finished and finished[0].endswith(f"→ generation `{made[0].name}`"), finished  # no run to point at
