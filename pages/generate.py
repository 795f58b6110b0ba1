"""Generate: the same prompt through the dense model and chosen runs, side by side, each with its tokens/s: what 50%
magnitude does to a sentence, and whether a smaller model still writes."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.progress import job_panel
from app.submit import ERROR, GENERATED, submit_generate
from wanda_engine.config.request import MAX_NEW_TOKENS
from wanda_engine.store.generation_record import GenerationRecord, list_generations

st.title("Generate side by side")
st.markdown("The same prompt, continued by the dense model and by each chosen run's pruned model: greedy (the most "
            "likely token each time, so the same every time) or sampled with a seed. Each run's model is its saved "
            "model, or pruned again from its record with its mask checked against the run's checksum.")
runs = ui.complete_runs()
names = [r.name for r in runs]
labels = {r.name: ui.run_label(r) for r in runs}
shown = [n for n in (st.session_state.get(ui.CURRENT), st.session_state.get(ui.COMPARE)) if n in names]
c1, c2 = st.columns([3, 1])
chosen = c1.multiselect("Runs", names, default=shown, format_func=labels.get, key="gen_runs",
                        help="Finished runs of one model; the sidebar's current and compare runs come first.")
dense = c2.checkbox("The dense model too", True, key="gen_dense")
prompt = st.text_area("Prompt", "It is a truth universally acknowledged, that", key="gen_prompt", height=80)
d1, d2, d3 = st.columns(3)
new_tokens = d1.number_input("New tokens (at most)", 1, MAX_NEW_TOKENS, 32, step=8, key="gen_tokens")
temperature = d2.number_input("Temperature (0 = greedy)", 0.0, 2.0, 0.0, step=0.1, key="gen_temperature")
seed = d3.number_input("Seed (sampling)", 0, 2**31 - 1, 0, step=1, key="gen_seed", disabled=temperature == 0)
st.button("Generate", type="primary", icon=":material/edit_note:", key="b_generate", on_click=submit_generate,
          args=([r for r in runs if r.name in chosen], prompt, new_tokens, dense, temperature, seed),
          help="Runs in the background like every job: the dense model is loaded once, each run's model after it.")
if err := st.session_state.pop(ERROR, None):
    st.error(err)
job_panel()


def side_by_side(record: GenerationRecord) -> None:
    st.markdown(f"**Prompt:** {record.prompt}")
    per_row = 3
    for start in range(0, len(record.outputs), per_row):
        for column, out in zip(st.columns(per_row), record.outputs[start:start + per_row]):
            with column.container(border=True):
                st.markdown(f"**{out.label}**" + ("" if out.model == "dense" else f" · run `{out.model}`"))
                st.text(out.text.strip() or "(nothing: the first token ended the text)")
                decode = f", decode {out.decode_tokens_per_s:.1f}/s" if out.decode_tokens_per_s else ""
                mask = " · mask checked" if out.mask_verified else ""
                st.caption(f"{len(out.tokens)} tokens in {out.seconds:.2f} s = {out.tokens_per_s:.1f} tokens/s"
                           f"{decode} · {out.params / 1e6:.1f} M parameters · {out.source}{mask} · stopped at "
                           f"{out.stopped.replace('_', ' ')}")
    st.caption(f"Model {record.model}; tokens/s of {record.measured_on()}: one generation each, a record and not a "
               "benchmark (a run's speed measurement is).")


st.divider()
records = {r.name: r for r in list_generations(ui.store().root)}
if not records:
    st.info("Nothing generated yet: choose runs (try the Compare's magnitude and Wanda runs) and press Generate.")
else:
    asked = st.session_state.get(GENERATED)  # this session's last Generate: shown once its record is written
    if asked in records and st.session_state.get("_gen_shown") != asked:
        st.session_state["gen_pick"] = st.session_state["_gen_shown"] = asked
    if st.session_state.get("gen_pick") not in records:
        st.session_state["gen_pick"] = next(iter(records))
    pick = st.selectbox("Generation", list(records), key="gen_pick",
                        format_func=lambda n: f"{n} · {len(records[n].outputs)} models · {records[n].prompt[:40]}")
    side_by_side(records[pick])
