"""Explain: why Wanda beats magnitude, argued in five steps, each a figure and one sentence computed from
the comparison in front of the class (the page only draws what `wanda_engine.outputs.explain` computed)."""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import streamlit as st

from app import ui
from app.export_controls import export_controls
from app.progress import job_panel
from app.submit import ERROR, submit, submit_sweep, time_sentences
from wanda_engine.outputs import explain
from wanda_engine.outputs import figures

MISSING = ("These runs were recorded before the records held each metric's error per input channel, so steps 3 "
           "and 4 have nothing to draw: press **Compare magnitude vs Wanda** again to record them.")


def say(sentence: str) -> None:
    """A step's one sentence, large enough to read from the back of the room."""
    st.markdown(f'<p style="font-size:1.3rem; line-height:1.5">{html.escape(sentence, quote=False)}</p>',
                unsafe_allow_html=True)


def show_error() -> None:
    if err := st.session_state.pop(ERROR, None):
        st.error(err)


def step_toy() -> None:
    st.header("1. A toy you can play with")
    scale = st.slider("Activation norm of input channel 2, times the other channels'", 1, 100, explain.TOY_SCALE,
                      key="x_outlier",
                      help="Every other input channel has norm 1. No model needed: this runs as you drag.")
    toy = explain.toy(scale)
    show(figures.explain_toy(toy), "explain_toy")
    say(toy.sentence)


def ask_for_comparison(why: str) -> None:
    st.info(f"{why} Steps 2–5 need a Wanda run and a magnitude run at the same settings: the button runs both with "
            f"the Prune page's settings, and this page then explains them. {time_sentences(single=False)}")
    st.button("Compare magnitude vs Wanda", type="primary", icon=":material/compare_arrows:", key="x_compare",
              on_click=submit, args=("compare",))
    show_error()
    job_panel()


def steps_from_records(pair: explain.Comparison) -> None:
    source = pair.evidence
    records, record = source.records(), source.record
    masks, theirs = explain.mask_sources(pair)
    (st.caption if theirs else st.warning)(f"{masks} Measured on {ui.measured_on(record)}.")
    st.header("2. Do outliers exist in this model?")
    if not draw(explain.outliers(records, record), figures.explain_outliers, "explain_outliers",
                "This run recorded no activation statistics, so there are no channel norms to show."):
        return
    st.header("3. Does magnitude cut exactly those?")
    draw(explain.outlier_cuts(records, record), figures.explain_cuts, "explain_cuts", MISSING)
    st.header("4. Is that where the error comes from?")
    if not draw(explain.error_share(records, record), figures.explain_error_share, "explain_error_share", MISSING):
        st.button("Compare magnitude vs Wanda", icon=":material/compare_arrows:", key="x_recompare", on_click=submit,
                  args=("compare",), help="Runs both again with the Prune page's settings.")
        show_error()


def draw(evidence: Any, figure: Callable[[Any], Any], key: str, missing: str) -> bool:
    """A step's figure and sentence; what is missing instead, when the runs cannot show it."""
    if evidence is None:
        st.warning(missing)
        return False
    show(figure(evidence), key)
    say(evidence.sentence)
    return True


def show(fig: Any, key: str) -> None:
    """A step's figure, and its export at print size (a slide for the lecture, a column for the paper)."""
    ui.chart(fig, key=key)
    with st.expander("Export this figure"):
        export_controls(fig, key.replace("_", "-"), f"{key}_export")


def _queue_protect(pair: explain.Comparison) -> None:
    submit_sweep(explain.protect_requests(pair.magnitude.record.request), _batch(pair), "the Explain page's test")


def _batch(pair: explain.Comparison) -> str:
    return f"protect-{pair.magnitude.name}"


def step_protect(pair: explain.Comparison) -> None:
    st.header("5. Test it: protect the outliers")
    magnitude = pair.magnitude.record
    protected = explain.protected_runs(magnitude, [r.record for r in ui.complete_runs()])
    runner = ui.job_runner()
    pending = any(job and job.batch == _batch(pair) for job in [runner.current(), *runner.queued()])
    steps = ", ".join(map(explain.protect_text, explain.PROTECT_STEPS))
    st.button(f"Run the test: magnitude again, never pruning the top {steps} of input channels", key="x_protect",
              icon=":material/science:", on_click=_queue_protect, args=(pair,), disabled=pending,
              help="Queues four magnitude runs at the comparison's settings; the rest of each row or matrix is "
                   "pruned harder, so the sparsity stays the same.")
    show_error()
    if pending:
        job_panel()
    draw(explain.intervention(magnitude, pair.wanda.record, protected), figures.explain_protect, "explain_protect",
         "The magnitude run has no perplexity (its evaluation was skipped): there is nothing to test against.")


st.title("Explain: why Wanda beats magnitude")
st.markdown("Five steps from a toy to a test on the model in front of you. Every number on this page comes from "
            "a run you can find on **Runs & export**; nothing here is written in advance.")
st.caption(" · ".join(f"**{term}**: {definition}" for term, definition in explain.JARGON.items()))
step_toy()
comparison, why_not = explain.comparison([ui.current_run(), ui.compare_run()])
if comparison is None:
    ask_for_comparison(why_not)
else:
    steps_from_records(comparison)
    step_protect(comparison)
