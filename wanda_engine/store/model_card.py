"""The model card (README.md with YAML metadata, as Hugging Face users expect) of a saved pruned model, from its
run's record: the base model, the method, what was removed, perplexity with its protocol, the measured speed, and how
the folder loads. Torch-free; the runner writes it next to the weights.
"""
from __future__ import annotations

import json
from typing import Any

from .run_record import RunRecord

CARD_FILE = "README.md"


def _yaml(data: dict[str, Any], indent: int = 0) -> list[str]:
    """A small YAML writer: mappings, lists of scalars, scalars as JSON (which YAML reads)."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines += [" " * indent + f"{key}:", *_yaml(value, indent + 2)]
        elif isinstance(value, (list, tuple)):
            lines += [" " * indent + f"{key}:"] + [" " * indent + f"- {json.dumps(v, ensure_ascii=False)}" for v in value]
        elif value is not None:
            lines.append(" " * indent + f"{key}: {json.dumps(value, ensure_ascii=False)}")
    return lines


def _removed(record: RunRecord) -> str:
    """What was removed, in one sentence."""
    s = record.structure
    if s is None:
        return (f"{record.sparsity:.2%} of the decoder blocks' linear weights are zero (unstructured or N:M sparsity: "
                "stored densely, the model is as large as the dense one)")
    if s.structure == "depth":
        return f"decoder blocks {', '.join(map(str, s.removed_blocks))} removed ({len(s.removed_blocks)} of {len(s.blocks)})"
    first = s.blocks[0]
    same = len({(len(b.heads_kept), b.channels_kept) for b in s.blocks}) == 1
    widths = (f"every block keeps {len(first.heads_kept)} of {first.heads} attention heads and {first.channels_kept} of "
              f"{first.channels} MLP channels" if same else
              f"blocks keep {min(len(b.heads_kept) for b in s.blocks)}–{max(len(b.heads_kept) for b in s.blocks)} of "
              f"{first.heads} heads and {min(b.channels_kept for b in s.blocks)}–"
              f"{max(b.channels_kept for b in s.blocks)} of {first.channels} MLP channels")
    return f"{widths} ({s.grouping})"


def _loading(loader: str) -> str:
    if loader == "from_pretrained":
        return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "model = AutoModelForCausalLM.from_pretrained(FOLDER)\ntokenizer = AutoTokenizer.from_pretrained(FOLDER)\n```")
    return ("Its blocks have different widths, which this architecture's config cannot say: plain `from_pretrained` "
            "refuses the folder (a size mismatch). Load it with the project's loader, which reads `shrink.json` and "
            "the safetensors (no pickle):\n\n```python\nfrom wanda_engine.inputs.shrunk import load_shrunk\n"
            "model = load_shrunk(FOLDER)\n```")


def model_card(record: RunRecord, base_model: str | None, loader: str) -> str:
    """README.md for the folder the run `record` saved its model to; `loader`: 'from_pretrained' or the project's."""
    pc, s = record.request.prune, record.structure
    protocol = record.eval.describe() if record.eval else None
    metadata: dict[str, Any] = {
        "base_model": base_model, "library_name": "transformers", "pipeline_tag": "text-generation",
        "tags": ["pruned", "wanda-engine", pc.method, "structured-pruning" if s else "sparse"],
        "pruning": {"method": pc.method_name, "label": record.label(), "structure": s.structure if s else "weights",
                    "allocation": s.allocation if s else None, "target": s.target if s else None,
                    "ratio": s.ratio if s else pc.target_sparsity,
                    "removed_fraction_of_block_parameters": round(s.removed_fraction, 6) if s else None,
                    "zero_fraction_of_block_weights": round(record.sparsity, 6) if record.sparsity is not None else None,
                    "bias_compensation": s.bias_compensation if s else None,
                    "parameters": s.model_params_kept if s else record.model.params,
                    "calibration": f"{record.calibration.text_name()}, {record.calibration.nsamples} windows × "
                                   f"{record.calibration.seqlen} tokens, seed {record.calibration.seed}"},
        "perplexity": {"dense": record.ppl_dense, "pruned": record.ppl, "protocol": protocol},
        "loader": loader,
    }
    lines = ["---", *_yaml(metadata), "---", "", f"# {record.model.label} — {record.label()}", "",
             f"Pruned with wanda_engine (run `{record.name}`): {_removed(record)}."]
    if s is not None:
        lines.append(f"{s.removed_fraction:.2%} of the decoder blocks' parameters removed "
                     f"({s.block_params_dense:,} → {s.block_params_kept:,}; the whole model {s.model_params_dense:,} → "
                     f"{s.model_params_kept:,} parameters).")
    if record.ppl is not None:
        lines += ["", f"Perplexity {record.ppl:.3f} (dense {record.ppl_dense:.3f}) on {protocol}."]
    if record.speed is not None:
        sp = record.speed
        lines += ["", f"Measured on {sp.device}, {sp.threads} threads, {sp.dtype}, median of {sp.repeats} interleaved "
                      f"rounds: prefill ×{sp.prefill_speedup:.2f}, decode ×{sp.decode_speedup:.2f} against the dense "
                      f"model (ideal ×{sp.ideal_speedup:.2f} by matmul FLOPs per token)."]
    lines += ["", "## Loading", "", _loading(loader), ""]
    return "\n".join(lines)
