"""Queueing jobs from any page: the Prune form's settings (kept in the session) -> requests -> the job runner; the
Shrink page's structure removers, the Generate page's prompt likewise."""
from __future__ import annotations

import uuid
from dataclasses import replace

import streamlit as st

from app import forms, ui
from app.progress import COMPARE_DONE, watch
from wanda_engine.config import RunRequest, ScoreRequest, ZeroShotConfig
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.store.generation_record import new_generation_name
from wanda_engine.store.run_store import Run
from wanda_engine.store.zeroshot_record import joined_config
from wanda_engine.sweep.cost import batch_sentence, run_cost, run_sentence

ERROR = "_submit_error"  # one sentence for the page to show after a refused submission
SCORE_NOTE = "_score_note"  # the runs a zero-shot scoring left out, and why


def _form(prefix: str, defaults: dict) -> dict:
    """A form's settings (its widgets' keys are `prefix` + the setting), each at its default until the user sets it,
    whichever page the session opens first."""
    for key, value in defaults.items():
        st.session_state.setdefault(f"{prefix}{key}", value)
    return {key: st.session_state[f"{prefix}{key}"] for key in defaults}


def ensure_form_defaults() -> None:
    """The Prune form's settings start at their defaults."""
    _form("f_", forms.DEFAULTS)


def form_values() -> dict:
    return _form("f_", forms.DEFAULTS)


def _upload() -> forms.Upload | None:
    f = st.session_state.get("u_calib_file")
    return forms.Upload(f.name, f.getvalue()) if f is not None else None


def _from_the_weights(request: RunRequest) -> RunRequest:
    """The Compare's magnitude run without the calibration passes where its settings need none: the same masks
    and perplexity, in a fraction of the time."""
    if request.prune.needs_calibration:
        return request
    return replace(request, prune=replace(request.prune, calibrate=False))


def compare_requests(values: dict) -> list[RunRequest]:
    """The Compare's pair at the form's settings: magnitude, from the weights alone where it can, then Wanda."""
    if values["pattern"] != "unstructured" and values["group"] == "matrix":
        values = {**values, "group": "default"}
    magnitude, wanda = (forms.build_request({**values, "run_name": ""}, ui.store(), _upload(), method=m)
                        for m in ("magnitude", "wanda"))
    return [_from_the_weights(magnitude), wanda]


def _estimated_values() -> dict:
    """The form's values as far as the time goes: the time depends on how many calibration tokens, not which (so no
    upload is written to estimate it), and never on the run's name."""
    values = {**form_values(), "run_name": ""}
    return {**values, "calib": "default"} if values["calib"] == "upload" else values


def time_sentences(single: bool = True) -> str:
    """What the form's run (if `single`) and the Compare take on this machine, from its past runs alike, or that
    none has run here yet; empty while the form holds a bad setting (said when a button is pressed)."""
    past = [run.record for run in ui.complete_runs()]
    try:
        pair = compare_requests(_estimated_values())
        one = forms.build_request(_estimated_values(), ui.store()) if single else None
    except EngineError:
        return ""
    compare = batch_sentence(pair, past, "The Compare")
    return f"{run_sentence(run_cost(one, past))} {compare}" if one is not None else compare


def submit(kind: str) -> None:
    """Build the request(s) from the form and queue them ('compare': the pair of `compare_requests`, one batch;
    'single': the form's method); a bad setting leaves one sentence under ERROR."""
    try:
        if kind == "compare":
            reqs, batch = compare_requests(form_values()), f"compare-{uuid.uuid4().hex[:12]}"
        else:
            reqs, batch = [forms.build_request(form_values(), ui.store(), _upload())], None
        runner = ui.job_runner()
        jobs = [runner.submit(r, owner=ui.session_id(), batch=batch) for r in reqs]
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    if kind == "compare":
        st.session_state.pop(COMPARE_DONE, None)  # the last Compare's time: this one will say its own
    watch([j.id for j in jobs], kind)


GENERATED = "gen_selected"  # the generation record the Generate page shows


def ensure_shrink_defaults() -> None:
    """The Shrink page's settings start at their defaults."""
    _form("s_", forms.SHRINK_DEFAULTS)


def shrink_values() -> dict:
    return _form("s_", forms.SHRINK_DEFAULTS)


def shrink_time_sentence() -> str:
    """What the Shrink page's run and its comparison take on this machine, from its past runs alike ('' while a
    setting is bad: said when a button is pressed)."""
    past = [run.record for run in ui.complete_runs()]
    try:
        values = _estimated_values()
        one = forms.shrink_request(values, shrink_values(), ui.store())
        compared = forms.compare_shrink_requests(values, shrink_values(), ui.store())
    except EngineError:
        return ""
    return f"{run_sentence(run_cost(one, past))} {batch_sentence(compared, past, 'The comparison')}"


def submit_shrink(kind: str) -> None:
    """Queue the Shrink page's run ('single'), or every remover and Wanda 50% at its ratio ('compare', one batch);
    a bad setting leaves one sentence under ERROR."""
    try:
        if kind == "compare":
            requests = forms.compare_shrink_requests(form_values(), shrink_values(), ui.store())
        else:
            requests = [forms.shrink_request(form_values(), shrink_values(), ui.store())]
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    if kind == "compare":
        submit_sweep(requests, f"shrink-{uuid.uuid4().hex[:12]}", "the frontier")
        return
    try:
        job = ui.job_runner().submit(requests[0], owner=ui.session_id())
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    watch([job.id], "single")


def submit_generate(runs: list[Run], prompt: str, max_new_tokens: int, dense: bool, temperature: float,
                    seed: int) -> None:
    """Queue one prompt through the dense model and `runs`; the page then shows its record (GENERATED)."""
    try:
        name = new_generation_name(ui.store().root)
        request = forms.generate_request(prompt, [str(r.path) for r in runs], max_new_tokens, dense, temperature,
                                         seed, name)
        job = ui.job_runner().submit(request, owner=ui.session_id(), batch=f"generate-{name}")
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    st.session_state[GENERATED] = name
    watch([job.id], "generate")


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


def score_requests(runs: list[Run], tasks: tuple[str, ...], limit: int | None) -> tuple[list[ScoreRequest], list[str]]:
    """The zero-shot scorings the runs shown need: one per run that lacks one of `tasks` at this limit; and a
    sentence for each run left out (scored already, or its earlier results were scored otherwise)."""
    zc = ZeroShotConfig(tasks=tasks, limit=limit)
    requests, said = [], []
    for run in runs:
        earlier = run.record.zeroshot
        if earlier is not None and set(tasks) <= set(earlier.pruned.results) and earlier.config.limit == limit:
            said.append(f"{run.name} has {', '.join(tasks)} at this limit already")
            continue
        try:
            joined_config(earlier, zc)
        except ConfigError as e:
            said.append(f"{run.name}: {e}")
            continue
        requests.append(ScoreRequest(run=str(run.path), zeroshot=zc))
    return requests, said


def submit_scores(runs: list[Run], tasks: tuple[str, ...], limit: int | None) -> None:
    """Queue the scorings `score_requests` plans, one batch; what was left out, or a refusal, in one sentence."""
    try:
        requests, said = score_requests(runs, tasks, limit)
        runner, batch = ui.job_runner(), f"score-{uuid.uuid4().hex[:12]}"
        jobs = [runner.submit(r, owner=ui.session_id(), batch=batch) for r in requests]
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    st.session_state[SCORE_NOTE] = "; ".join(said) + "." if said else ""
    if jobs:
        watch([j.id for j in jobs], "score")
