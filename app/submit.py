"""Queueing runs from any page: the Prune form's settings (kept in the session) -> requests -> the job runner."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app import forms, ui
from app.progress import watch
from wanda_engine.config import RunRequest
from wanda_engine.core.errors import EngineError

ERROR = "_submit_error"  # one sentence for the page to show after a refused submission


def ensure_form_defaults() -> None:
    """The Prune form's settings start at their defaults, whichever page the session opens first."""
    for key, value in forms.DEFAULTS.items():
        st.session_state.setdefault(f"f_{key}", value)


def form_values() -> dict:
    ensure_form_defaults()
    return {k: st.session_state[f"f_{k}"] for k in forms.DEFAULTS}


def _upload() -> forms.Upload | None:
    f = st.session_state.get("u_calib_file")
    return forms.Upload(f.name, f.getvalue()) if f is not None else None


def _from_the_weights(request: RunRequest) -> RunRequest:
    """The Compare's magnitude run without the calibration passes where its settings need none: the same masks
    and perplexity, in a fraction of the time."""
    if request.prune.needs_calibration:
        return request
    return replace(request, prune=replace(request.prune, calibrate=False))


def submit(kind: str) -> None:
    """Build the request(s) from the form and queue them ('compare': magnitude, from the weights alone where it
    can, and Wanda; 'single': the form's method); a bad setting leaves one sentence under ERROR."""
    try:
        store = ui.store()
        if kind == "compare":
            v = form_values()
            if v["pattern"] != "unstructured" and v["group"] == "matrix":
                v["group"] = "default"
            magnitude, wanda = (forms.build_request({**v, "run_name": ""}, store, _upload(), method=m)
                                for m in ("magnitude", "wanda"))
            reqs = [_from_the_weights(magnitude), wanda]
        else:
            reqs = [forms.build_request(form_values(), store, _upload())]
        runner = ui.job_runner()
        jobs = [runner.submit(r, owner=ui.session_id()) for r in reqs]
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    watch([j.id for j in jobs], kind)


def submit_sweep(requests: list[RunRequest], batch: str, purpose: str) -> None:
    """Queue prepared requests as one sweep batch, labelled 'magnitude+protect1% 50% · PURPOSE' (their runs do not
    change the selection when they finish); a refusal leaves one sentence under ERROR."""
    runner = ui.job_runner()
    try:
        jobs = [runner.submit(r, owner=ui.session_id(), label=f"{r.prune.label} · {purpose}", batch=batch)
                for r in requests]
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    watch([j.id for j in jobs], "sweep")
