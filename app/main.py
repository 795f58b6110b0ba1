"""Wanda pruning lab: `streamlit run app/main.py`.

Streamlit runs this file as `__main__`. The worker process (app/worker.py) starts with multiprocessing's spawn,
which re-runs the parent's `__main__` module in the child under the name `__mp_main__`: in the server that is
this script. Hence the guard at the bottom, and nothing but the path set-up above it: without them every
worker start drew the whole app in the child without a session (48 "missing ScriptRunContext" warnings in the
server's log, and a job runner of its own).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PAGES = ROOT / "pages"


def navigation() -> StreamlitPage:
    """The pages, in the order the navigation lists them."""
    import streamlit as st

    return st.navigation([
        st.Page(PAGES / "prune.py", title="Prune", icon=":material/content_cut:", default=True),
        st.Page(PAGES / "shrink.py", title="Shrink", icon=":material/compress:"),
        st.Page(PAGES / "explain.py", title="Explain", icon=":material/school:"),
        st.Page(PAGES / "layers.py", title="Layers", icon=":material/layers:"),
        st.Page(PAGES / "sparsity.py", title="Sparsity", icon=":material/grid_on:"),
        st.Page(PAGES / "masks.py", title="Masks", icon=":material/texture:"),
        st.Page(PAGES / "perplexity.py", title="Perplexity", icon=":material/trending_down:"),
        st.Page(PAGES / "zeroshot.py", title="Zero-shot", icon=":material/quiz:"),
        st.Page(PAGES / "generate.py", title="Generate", icon=":material/edit_note:"),
        st.Page(PAGES / "sweep.py", title="Sweep", icon=":material/grid_view:"),
        st.Page(PAGES / "repair.py", title="Repair", icon=":material/healing:"),
        st.Page(PAGES / "runs.py", title="Runs & export", icon=":material/folder_open:"),
    ])


def sidebar() -> None:
    """The shared sidebar: which run the pages show, and against what, and the job line."""
    import streamlit as st

    from app import ui
    from app.progress import sidebar_job_status, sync

    # Keep the Prune page's settings while other pages show (Streamlit drops the state of unrendered widgets).
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("f_")]:
        st.session_state[key] = st.session_state[key]

    sync()  # finished runs of this session's batches become the selection below
    pending = st.session_state.pop(ui.PENDING, {})
    for key, value in pending.items():
        st.session_state[key] = value

    runs = ui.complete_runs()
    names = [r.name for r in runs]
    labels = {r.name: ui.run_label(r) for r in runs}
    labels[ui.NONE] = "(none)"
    if st.session_state.get(ui.CURRENT) not in names:
        st.session_state[ui.CURRENT] = names[0] if names else ui.NONE
    if st.session_state.get(ui.COMPARE) not in names + [ui.NONE]:
        st.session_state[ui.COMPARE] = names[1] if len(names) > 1 else ui.NONE

    with st.sidebar:
        st.markdown("### Runs shown")
        st.selectbox("Current run", names or [ui.NONE], key=ui.CURRENT, format_func=labels.get,
                     help="The run every page draws. Only finished runs are listed; see Runs & export for the rest.")
        st.selectbox("Compare against", [ui.NONE] + [n for n in names], key=ui.COMPARE, format_func=labels.get,
                     help="A second run drawn next to the current one (perplexity bars, mask overlap).")
        sidebar_job_status()


def main() -> None:
    from app import ast_lock

    ast_lock.install()  # before any page reads a run's arrays on this thread while another session does
    import streamlit as st

    from app import ui

    st.set_page_config(page_title="Wanda pruning lab", page_icon=ui.favicon(), layout="wide")
    page = navigation()
    sidebar()
    page.run()


if __name__ == "__main__":
    main()
