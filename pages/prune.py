"""Prune: choose a model, a method and its settings; run it in the background; see why Wanda wins."""
from __future__ import annotations

import streamlit as st

from app import forms, ui
from app.overview import overview
from app.progress import job_panel
from app.submit import ERROR, ensure_form_defaults, submit, time_sentences
from wanda_engine.config import PAPER_TASKS
from wanda_engine.evaluation.tasks import LASTWORD_TASK, local_task_names

st.title("Prune a language model")
st.markdown(
    "**Wanda** (Sun et al., 2023) removes the weights with the smallest |W|·‖Xⱼ‖₂ — weight magnitude times the norm "
    "of the input channel's activations on a little calibration text — compared within each output row. "
    "Plain **magnitude** pruning looks at |W| alone and so cuts weights that feed the few *outlier* channels "
    "with huge activations. Press **Compare magnitude vs Wanda** to see the difference on the embedded model."
)

ensure_form_defaults()

# --- settings --------------------------------------------------------------------------------------
col_model, col_calib, col_eval = st.columns(3, gap="large")
with col_model:
    st.subheader("Model & method")
    st.radio("Model", list(forms.MODEL_KINDS), format_func=forms.MODEL_KINDS.get, key="f_model_kind", horizontal=True,
             help="The embedded default is SmolLM2-135M-Instruct, shipped with the project: no download needed.")
    if st.session_state.f_model_kind == "hf":
        st.text_input("Hugging Face id", key="f_model_text", placeholder="HuggingFaceTB/SmolLM2-135M",
                      help="Needs the model in the local Hugging Face cache or a network connection.")
    elif st.session_state.f_model_kind == "folder":
        st.text_input("Model folder", key="f_model_text", placeholder="/path/to/saved/model",
                      help="A folder written by save_pretrained (config.json, weights, tokenizer).")
    methods = forms.method_choices()
    st.selectbox("Method", list(methods), format_func=methods.get, key="f_method")
    st.selectbox("Sparsity pattern", list(forms.PATTERNS), format_func=forms.PATTERNS.get, key="f_pattern",
                 help="N:M prunes N weights in every M consecutive inputs of each row (2:4 runs fast on NVIDIA GPUs).")
    nm_pattern = st.session_state.f_pattern != "unstructured"
    if st.session_state.f_pattern == "custom":
        st.text_input("Custom N:M", key="f_custom_nm", placeholder="e.g. 3:8",
                      help="N of every M consecutive input weights are pruned; M must divide every layer's input width.")
    st.slider("Sparsity (fraction of weights removed)", 0.0, 0.95, step=0.05, key="f_sparsity", disabled=nm_pattern,
              help="For N:M patterns the sparsity is N/M.")
    st.selectbox("Comparison group", list(forms.GROUPS), format_func=forms.GROUPS.get, key="f_group",
                 help="Which weights compete: the reference compares Wanda and SparseGPT within each output row, "
                      "magnitude within the whole matrix.")
    st.selectbox("Layer-wise sparsity", list(forms.LAYERWISE), format_func=forms.LAYERWISE.get, key="f_layerwise",
                 disabled=nm_pattern, help="OWL (Yin et al. 2024) prunes blocks with many outlier Wanda scores less "
                 "and the others more, keeping the average; it matters at high sparsity (70% and up).")
    st.selectbox("Weight update", list(forms.WEIGHT_UPDATES), format_func=forms.WEIGHT_UPDATES.get,
                 key="f_weight_update", help=forms.WEIGHT_UPDATE_HELP)
with col_calib:
    st.subheader("Calibration")
    st.selectbox("Calibration text", list(forms.CALIB_SOURCES), format_func=forms.CALIB_SOURCES.get, key="f_calib",
                 help="Wanda and SparseGPT measure activations on this text; magnitude ignores it.")
    if st.session_state.f_calib == "upload":
        st.file_uploader("Calibration .txt file (UTF-8, up to 50 MB)", type=["txt"], key="u_calib_file")
    st.number_input("Samples (nsamples)", 1, 1024, step=1, key="f_nsamples",
                    help="Number of random calibration windows.")
    st.number_input("Tokens per sample (seqlen)", 8, 8192, step=8, key="f_seqlen")
    st.number_input("Seed", 0, 2**31 - 1, step=1, key="f_seed", help="Chooses the calibration windows.")
with col_eval:
    st.subheader("Evaluation")
    st.selectbox("Perplexity measured on", list(forms.EVAL_SOURCES), format_func=forms.EVAL_SOURCES.get,
                 key="f_eval_dataset")
    no_eval = st.session_state.f_eval_dataset == "none"
    st.number_input("Tokens per window", 16, 8192, step=16, key="f_eval_seqlen", disabled=no_eval)
    st.number_input("Windows (0 = the whole text)", 0, 100000, step=1, key="f_eval_windows", disabled=no_eval,
                    help="Non-overlapping windows; fewer windows run faster but measure on fewer tokens.")
    with st.expander("Zero-shot accuracy (lm-eval)", expanded=bool(st.session_state.f_zs_tasks)):
        st.text_input("Task folder (optional)", key="f_zs_task_dir", placeholder="/path/to/local/tasks",
                      help="A folder of lm-eval task YAMLs with local JSON/JSONL data (dataset_path: json): "
                           "needed offline, where the paper's tasks cannot download their data.")
        zs_options = list(dict.fromkeys([LASTWORD_TASK, *PAPER_TASKS, *local_task_names(st.session_state.f_zs_task_dir),
                                         *st.session_state.f_zs_tasks]))
        st.multiselect("Zero-shot tasks", zs_options, key="f_zs_tasks", accept_new_options=True,
                       placeholder="none (off)",
                       help=f"Scored by EleutherAI's lm-eval harness on the dense and the pruned model, as in the "
                            f"Wanda paper (boolq … openbookqa; their data comes from the hub). {LASTWORD_TASK} is the "
                            "project's own, built from Pride and Prejudice: it works offline. Type any lm-eval task "
                            "name, or one from the folder.")
        st.number_input("Questions per task (0 = all)", 0, 1_000_000, step=10, key="f_zs_limit",
                        help="A limit makes a quick estimate; the paper scores every question.")
    st.text_input("Run name (optional)", key="f_run_name", placeholder="named automatically",
                  help="Letters, digits, '.', '_' and '-'.")


c1, c2, c3 = st.columns([1.3, 1, 2.5])
busy = ui.job_runner().busy
c1.button("Compare magnitude vs Wanda", type="primary", icon=":material/compare_arrows:", key="b_compare", on_click=submit, args=("compare",),
          help="Queues a magnitude run and a Wanda run with the settings above, then shows them side by side.")
c2.button("Run" + (" (queue)" if busy else ""), key="b_run", icon=":material/play_arrow:", on_click=submit, args=("single",),
          help="Prune with the method above." + (" Another run is in progress: this one waits in the queue." if busy else ""))
c3.caption(f"{time_sentences()} Runs go on in the background while you switch pages; one run at a time per server, the "
           "rest wait in a queue.")
if err := st.session_state.pop(ERROR, None):
    st.error(err)

job_panel()

st.divider()
overview()
