"""Repair figures: a repair's training loss with its perplexity points filling in, and the bars of dense /
pruned / +weight update / +fine-tune / +LoRA perplexity at one sparsity, each labelled with its training
budget (tokens seen), next to the dense model fine-tuned with the same budget (the fair reference: training
on Austen and evaluating on Austen also adapts a model to Austen's style, repaired or not)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...store.run_record import EvalInfo, RunRecord
from ...repair.config import RepairConfig
from ...repair.record import RepairRecord
from ...core.names import text_title
from ...core.palette import GREEN, PURPLE
from ...methods.table import Kind
from .style import DARK_GREY, GREY, VERMILLION, finite, layout, method_colour, note

# the OBS update is SparseGPT's own solver: SparseGPT's colour
REPAIR_COLOURS = {"obs": GREEN, "finetune": VERMILLION, "lora": PURPLE, "dense": DARK_GREY}
NO_REFERENCE = "no dense model fine-tuned with this budget yet — the fair reference; run it to compare"
NOT_MEASURED = "not measured"
Losses = Sequence[Sequence[float]]  # (step, loss, lr, elapsed_s) per optimizer step
Evals = Sequence[Sequence[float]]  # (step, tokens_seen, ppl) per evaluation


def repair_colour(config: RepairConfig) -> str:
    return REPAIR_COLOURS["dense" if config.dense else config.method]


def budget(config: RepairConfig) -> str:
    """'100 steps × 2 × 256 tokens = 51,200 tokens': what a repair trained on, said on every figure."""
    return f"{config.steps} steps × {config.batch_size} × {config.seqlen} tokens = {config.tokens():,} tokens"


def train_text(record: RepairRecord) -> str:
    """What the repair trained on: the record's label of its training text, else the requested source."""
    train: Mapping[str, Any] = record.train
    return text_title(str(train.get("text") or train.get("label") or record.request.config.train_text))


def _loss_traces(fig: go.Figure, name: str, losses: Losses, evals: Evals, colour: str) -> None:
    fig.add_trace(go.Scatter(
        x=[p[0] for p in losses], y=[p[1] for p in losses], customdata=[p[2] for p in losses], mode="lines",
        name=name, line={"color": colour, "width": 1.5}, legendgroup=name,
        hovertemplate=f"{name}<br>step %{{x}}<br>loss %{{y:.4f}}<br>lr %{{customdata:.3g}}<extra></extra>"),
        row=1, col=1)
    fig.add_trace(go.Scatter(
        x=[p[0] for p in evals], y=[p[2] for p in evals], customdata=[p[1] for p in evals], mode="lines+markers",
        name=name, line={"color": colour, "width": 2}, marker={"size": 8}, legendgroup=name, showlegend=False,
        hovertemplate=f"{name}<br>step %{{x}} (%{{customdata:,}} training tokens)<br>perplexity %{{y:.3f}}"
                      "<extra></extra>"), row=2, col=1)


def _loss_figure(series: Sequence[tuple[str, Losses, Evals, str]], steps: int, title: str, subtitle: str) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.55, 0.45],
                        subplot_titles=("training loss (cross-entropy per batch)",
                                        "perplexity on the run's evaluation windows"))
    for name, losses, evals, colour in series:
        _loss_traces(fig, name, losses, evals, colour)
    layout(fig, title, subtitle, height=580)
    fig.update_xaxes(range=[0, max(steps, 1)], dtick=1 if steps <= 10 else None)
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="perplexity", row=2, col=1)
    if not any(losses or evals for _, losses, evals, _ in series):
        note(fig, "no step done yet")
    return fig


def _evaluated_on(ev: EvalInfo | None) -> str:
    return f"perplexity on {ev.describe()}" if ev is not None else "perplexity not measured"


def repair_loss(record_or_records: RepairRecord | Sequence[RepairRecord]) -> go.Figure:
    """Training loss over the steps (top) and the perplexity points (bottom) of one or more repairs."""
    records = [record_or_records] if isinstance(record_or_records, RepairRecord) else list(record_or_records)
    if not records:
        return note(layout(go.Figure(), "Repair: training loss and perplexity"), "no repair yet")
    names: list[str] = []
    for r in records:
        names.append(r.label() if r.label() not in names else f"{r.label()} ({r.name})")
    series = [(name, r.losses, r.evals, repair_colour(r.request.config)) for name, r in zip(names, records)]
    runs = sorted({r.run for r in records})
    first = records[0]
    if len(records) == 1:
        title = f"Repair of {first.run}: {first.label()}, training loss and perplexity"
        sub = (f"trained on {train_text(first)}, {budget(first.request.config)}; {_evaluated_on(first.eval)} "
               f"({first.evaluated})")
    else:
        title = f"Repairs of {', '.join(runs)}: training loss and perplexity"
        sub = "; ".join(f"{name}: {budget(r.request.config)} of {train_text(r)}" for name, r in zip(names, records))
        sub += f"; {_evaluated_on(first.eval)}"
    return _loss_figure(series, max(r.request.config.steps for r in records), title, sub)


def repair_progress(losses: Losses, evals: Evals, config: RepairConfig, run: RunRecord) -> go.Figure:
    """A running repair's loss curve and perplexity points so far (a job's progress), scaled to all its steps."""
    title = f"Repairing {run.name}: {config.label()} (running)"
    sub = f"training {budget(config)}; {_evaluated_on(run.eval)}"
    return _loss_figure([(config.label(), losses, evals, repair_colour(config))], config.steps, title, sub)


def takes_weight_update(run: RunRecord) -> bool:
    """Whether a '+weight update' bar belongs next to this run: its kept weights were not updated already
    (a solver's are, SparseGPT's: it is its own mask + update)."""
    prune = run.request.prune
    return prune.weight_update == "none" and prune.method_entry.kind is not Kind.SOLVER


def _same_eval(a: EvalInfo | None, b: EvalInfo | None) -> bool:
    return a is not None and b is not None and (a.dataset, a.seqlen, a.windows, a.tokens) == (
        b.dataset, b.seqlen, b.windows, b.tokens)


def _usable(pruned_run: RunRecord, repairs: Sequence[RepairRecord]) -> list[RepairRecord]:
    """The complete repairs with a final perplexity measured on the pruned run's own windows."""
    return [r for r in repairs if r.complete and finite(r.ppl_after) is not None
            and (r.eval is None or _same_eval(r.eval, pruned_run.eval))]


def dense_reference(pruned_run: RunRecord, repairs: Sequence[RepairRecord]) -> RepairRecord | None:
    """The newest complete repair that fine-tuned the dense model (the fair reference), or None."""
    dense = [r for r in _usable(pruned_run, repairs) if r.request.config.dense]
    return dense[-1] if dense else None


def _unmerged(record: RepairRecord) -> bool:
    config = record.request.config
    return config.method == "lora" and config.evaluate == "adapter"


def _repair_bar_name(record: RepairRecord) -> str:
    if record.request.config.method == "finetune":
        return "+fine-tune"
    return "+LoRA (unmerged adapter)" if _unmerged(record) else "+LoRA"


def _tokens(record: RepairRecord) -> int:
    return record.tokens_seen or record.request.config.tokens()


def _sparsity_text(before: float | None, after: float | None) -> str:
    if after is None:
        return "sparsity not measured"
    if before is None or before == after:
        return f"sparsity {after:.2%}"
    return f"sparsity {after:.2%} (was {before:.2%}: the zeros were not all kept)"


Bar = tuple[str, float | None, str, str]  # (label, perplexity or None for 'not measured', colour, hover)


def _bars(pruned_run: RunRecord, repairs: Sequence[RepairRecord], obs_run: RunRecord | None) -> list[Bar]:
    bars: list[Bar] = [("dense", finite(pruned_run.ppl_dense), GREY, "the unpruned model"),
                       (f"pruned<br>{pruned_run.label()}", finite(pruned_run.ppl),
                        method_colour(pruned_run.label(), choice=pruned_run.request.prune.choice),
                        f"run {pruned_run.name}<br>" + _sparsity_text(None, pruned_run.sparsity))]
    if takes_weight_update(pruned_run):
        obs = obs_run.ppl if obs_run is not None else None
        hover = (f"run {obs_run.name}, {obs_run.label()}: the same mask selector, the kept weights updated by "
                 f"SparseGPT's OBS solve<br>{_sparsity_text(None, obs_run.sparsity)}") if obs_run else NOT_MEASURED
        bars.append(("+weight update (OBS)<br>no training", finite(obs), REPAIR_COLOURS["obs"], hover))
    shown = [r for r in _usable(pruned_run, repairs) if not r.request.config.dense]
    for method, name in (("finetune", "+fine-tune"), ("lora", "+LoRA")):
        mine = [r for r in shown if r.request.config.method == method]
        if not mine:
            bars.append((f"{name}<br>not run", None, REPAIR_COLOURS[method], NOT_MEASURED))
        for r in mine:
            bars.append((f"{_repair_bar_name(r)}, {_tokens(r):,} tokens<br>{r.label()}", finite(r.ppl_after),
                         repair_colour(r.request.config),
                         f"repair {r.name}: {r.evaluated}, trained on {budget(r.request.config)} of {train_text(r)}"
                         f"<br>{_sparsity_text(r.sparsity_before, r.sparsity_after)}"
                         + (" of W; the unmerged adapter adds a dense update" if _unmerged(r) else "")))
    return bars


def repair_bars(pruned_run: RunRecord, repairs: list[RepairRecord], obs_run: RunRecord | None) -> go.Figure:
    """Dense / pruned / +weight update / +fine-tune / +LoRA perplexity side by side on the pruned run's
    windows, each repair labelled with its training budget; the dense fine-tuned reference as a dashed line
    when one was measured, and said to be missing when not. Bars not measured say so."""
    bars = _bars(pruned_run, repairs, obs_run)
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    # horizontal: the bars' names (with their budgets) read across, at a column's width too
    fig = go.Figure(go.Bar(
        y=labels, x=values, orientation="h", marker={"color": [b[2] for b in bars]}, customdata=[b[3] for b in bars],
        name="perplexity", showlegend=False,
        text=[f"{v:.2f}" if v is not None else NOT_MEASURED for v in values], textposition="outside",
        cliponaxis=False, hovertemplate="%{y}<br>perplexity %{x:.3f}<br>%{customdata}<extra></extra>"))
    for label, value, _, _ in bars:
        if value is None:
            fig.add_annotation(y=label, x=0, text=NOT_MEASURED, showarrow=False, xanchor="left",
                               font={"color": GREY, "size": 12})
    reference = dense_reference(pruned_run, repairs)
    if reference is not None:
        ppl = finite(reference.ppl_after)
        fig.add_trace(go.Scatter(
            y=[labels[0], labels[-1]], x=[ppl, ppl], mode="lines",
            line={"color": REPAIR_COLOURS["dense"], "dash": "dash"},
            name=f"dense fine-tuned, {_tokens(reference):,} tokens ({ppl:.2f})",
            hovertemplate=f"the dense model fine-tuned with {budget(reference.request.config)} of "
                          f"{train_text(reference)}: the fair reference<br>perplexity %{{x:.3f}}<extra></extra>"))
    ev = pruned_run.eval
    sparsity = pruned_run.sparsity if pruned_run.sparsity is not None else pruned_run.request.prune.target_sparsity
    title = f"Perplexity after repair at {sparsity:.2%} sparsity" + (f" on {text_title(ev.dataset)}" if ev else "")
    sub = (f"{ev.describe() if ev else 'not evaluated'}; lower is better; each repair labelled with its training "
           f"budget (tokens seen)")
    sub += "" if reference is not None else f"; {NO_REFERENCE}"
    if ev is None or not any(v is not None for v in values):
        layout(fig, title, sub, showlegend=False)
        return note(fig, "the pruned run was not evaluated: nothing to compare")
    layout(fig, title, sub, showlegend=reference is not None)
    measured = [v for v in values if v is not None] + ([finite(reference.ppl_after)] if reference is not None else [])
    # room on the right for the label outside the longest bar
    fig.update_xaxes(title_text="perplexity", range=[0, 1.18 * max(measured)])
    fig.update_yaxes(autorange="reversed")  # the bars' names say what each is
    return fig


def _closes(name: str, ppl: float, pruned: float, dense: float) -> str:
    if pruned <= dense:
        return f"{name} reaches {ppl:.2f}, where the pruned model ({pruned:.2f}) had no gap to the dense ({dense:.2f})"
    share = (pruned - ppl) / (pruned - dense)
    if ppl < dense:
        return (f"{name} goes below the dense model ({ppl:.2f} < {dense:.2f}, {share:.0%} of the gap): partly "
                "adaptation to its training text's style, not repair")
    return f"{name} closes {share:.0%} of the gap ({ppl:.2f})"


def repair_summary(pruned_run: RunRecord, repairs: Sequence[RepairRecord], obs_run: RunRecord | None) -> str:
    """One paragraph computed from the records: how much of the pruned-vs-dense perplexity gap each
    measured repair closes, on what, with what budget, at which sparsity; '' when there is nothing to say."""
    pruned, dense, ev = finite(pruned_run.ppl), finite(pruned_run.ppl_dense), pruned_run.eval
    if pruned is None or dense is None or ev is None:
        return ""
    parts = []
    if obs_run is not None and finite(obs_run.ppl) is not None and takes_weight_update(pruned_run):
        parts.append(_closes(f"the OBS weight update ({obs_run.label()}, no training)", obs_run.ppl, pruned, dense))
    for r in (r for r in _usable(pruned_run, repairs) if not r.request.config.dense):
        kept = ("at exactly the pruned sparsity" if r.sparsity_after == r.sparsity_before
                and r.mask_sha256_after == r.mask_sha256_before else "with the zeros not all kept, at")
        if _unmerged(r):  # W keeps its zeros, but the model computes W + BA: a dense update on every weight
            kept = "its dense low-rank update unmerged beside weights that keep their zeros at"
        sparsity = f"{r.sparsity_after:.2%}" if r.sparsity_after is not None else "an unmeasured sparsity"
        parts.append(f"{_closes(f'{_repair_bar_name(r)[1:]} ({r.label()}, {r.evaluated})', r.ppl_after, pruned, dense)}"
                     f" after {_tokens(r):,} training tokens of {train_text(r)}, {kept} {sparsity}")
    if not parts:
        return ""
    text = (f"Between the pruned ({pruned_run.label()}, P = {pruned:.2f}) and the dense (D = {dense:.2f}) perplexity "
            f"on {ev.describe()}: " + "; ".join(parts) + ".")
    reference = dense_reference(pruned_run, repairs)
    if reference is None:
        return f"{text} There is {NO_REFERENCE}."
    return (f"{text} The dense model fine-tuned with {_tokens(reference):,} tokens reaches "
            f"{reference.ppl_after:.2f}: the fair reference for what training alone does.")
