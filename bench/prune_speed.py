"""Benchmark: prune time against the floor of two passes per block, on one machine, in one run.

Prints a table: model, device, dtype, nsamples x seqlen, method/pattern, dense forward time over the
calibration set, prune time, their ratio (floor ~2: one calibration + one propagation pass per
block; a little under 2 for models whose LM head is a large part of the forward), the
metric+mask+record share, peak host memory (VmHWM; RssAnon, which leaves out the page cache of
memory-mapped checkpoints; and the model weights held in memory at any time), peak device memory, eval tokens/s, and the pruning's phases
(capture/calibrate/select/propagate seconds). Ratios, not absolute times, are
what to compare: these machines are noisy.

    python bench/prune_speed.py                                   # embedded model, CPU
    python bench/prune_speed.py --model meta-llama/Llama-2-7b-hf --device cuda --dtype float16
    python bench/prune_speed.py --random llama-7b --device cuda --dtype float16 --nsamples 128 --seqlen 2048
    python bench/prune_speed.py --random llama-7b --device cuda --dtype float16 --offload --device-memory-gib 4
        # a 12.6 GiB model pruned under a 4 GiB device cap: weights stay in host memory, one block on the GPU
    python bench/prune_speed.py --max-memory cpu=100MiB
        # accelerate's device_map under a host budget: what does not fit is read from disk, block by block
    python bench/prune_speed.py --random llama-1b --device cuda --dtype float16 --max-memory 0=1GiB,cpu=1GiB
        # 2.2 GB of weights: 1 GiB on the GPU, 1 GiB in host memory, the rest on disk
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from wanda_engine.config import OffloadConfig, PruneConfig  # noqa: E402
from wanda_engine.evaluation.perplexity import perplexity  # noqa: E402
from wanda_engine.core.events import MatrixPruned  # noqa: E402
from wanda_engine.inputs.layers import find_blocks, find_linears  # noqa: E402
from wanda_engine.inputs.models import load_model, offload_kwargs  # noqa: E402
from wanda_engine.inputs.offload import discard_pruned_copies, offload_summary  # noqa: E402
from wanda_engine.inputs.device import resolve_device  # noqa: E402
from wanda_engine.pruning.pipeline import prune_model  # noqa: E402

RANDOM_SHAPES = {  # model families by shape only: random weights, no download
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "llama-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512, max_position_embeddings=256),  # the smoke test's
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
}


def random_model(args):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**RANDOM_SHAPES[args.random])
    torch.manual_seed(0)
    with torch.device(resolve_device(args.device)):  # random init is fastest where the compute is
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    return model.eval()


def build(args):
    """(model, label, vocabulary size); with --max-memory, placed by accelerate (anew at each call)."""
    import tempfile

    offload = OffloadConfig.parse(args.max_memory, tempfile.mkdtemp(prefix="bench-offload-")) if args.max_memory else None
    if args.random and offload is not None:  # saved once, then placed like any checkpoint (no tokenizer needed)
        from transformers import AutoModelForCausalLM

        if getattr(args, "random_folder", None) is None:
            args.random_folder = tempfile.mkdtemp(prefix="bench-random-")
            random_model(args).save_pretrained(args.random_folder)
        model = AutoModelForCausalLM.from_pretrained(args.random_folder, dtype=getattr(torch, args.dtype),
                                                     **offload_kwargs(offload)).eval()
        return model, f"random {args.random} [{args.max_memory}: {offload_summary(model)}]", model.config.vocab_size
    if args.random:
        model = random_model(args)
        return model.to("cpu") if args.offload else model, f"random {args.random}", model.config.vocab_size
    if offload is not None:  # accelerate places the model; the blocks beyond the budget stay on disk
        loaded = load_model(args.model, dtype=args.dtype, offload=offload)
        return loaded.model, f"{loaded.label} [{args.max_memory}: {loaded.info['device_map']}]", len(loaded.tokenizer)
    loaded = load_model(args.model, dtype=args.dtype)
    model = loaded.model if args.offload else loaded.model.to(resolve_device(args.device))
    return model, loaded.label, len(loaded.tokenizer)


def reset_peak_host() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) of this process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_host_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """Peak anonymous resident memory (RssAnon: not the page cache of memory-mapped checkpoint files,
    which VmHWM counts), sampled every 5 ms on a thread while in the `with`."""

    def __enter__(self) -> "AnonPeak":
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]) / 1024)
            except OSError:
                return
            if self._stop.wait(0.005):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def resident_weight_bytes(model) -> int:
    """Bytes of the model's parameters held in memory now (accelerate's offloaded ones are 'meta')."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta")


def offloaded_forward_s(model, windows, batch_size, device, sync):
    """Time the dense forward with only one block at a time on the device (the pipeline's own capture and replay)."""
    from wanda_engine.pruning.capture import capture_block_inputs, run_block

    def run() -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            _, blocks = find_blocks(model)
            chunks = capture_block_inputs(model, blocks, windows, batch_size, torch.device("cpu"))
            for i, block in enumerate(blocks):
                block.to(device)
                for chunk in chunks:
                    chunk.hidden = run_block(block, i, chunk, device).to("cpu")
                block.to("cpu")
        sync()
        return time.perf_counter() - t
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--random", choices=sorted(RANDOM_SHAPES), help="random weights of this shape instead of --model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--methods", default="wanda,magnitude,wanda:2:4,sparsegpt",
                   help="comma-separated method[:N:M] list; owl-METHOD for OWL block sparsities")
    p.add_argument("--records", choices=["on", "off", "both"], default="on",
                   help="record per-matrix statistics (the app's figures) or not; 'both' runs each method twice")
    p.add_argument("--eval-windows", type=int, default=4)
    p.add_argument("--offload", action="store_true",
                   help="keep the weights in host memory; only the block being pruned goes to --device")
    p.add_argument("--device-memory-gib", type=float, default=None,
                   help="CUDA: cap this process's device memory (torch.cuda.set_per_process_memory_fraction)")
    p.add_argument("--max-memory", default=None,
                   help="load with accelerate's device_map under these budgets (e.g. cpu=100MiB); the rest is on disk")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()

    device = resolve_device(args.device)
    if args.device_memory_gib is not None:
        if device.type != "cuda":
            p.error("--device-memory-gib needs a CUDA device")
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.device_memory_gib * 2**30 / total), device)
    model, label, vocab = build(args)
    model_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    windows = torch.randint(0, vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    # dense weights back between runs: a copy in memory, or (accelerate offload) the model loaded again
    original = None if args.max_memory else {k: v.clone() for k, v in model.state_dict().items() if v.dim() == 2}
    # one decoder block's weights: the device-memory budget is this + its working set + one activation chunk
    block_bytes = sum(p.numel() * p.element_size() for p in find_blocks(model)[1][0].parameters())
    first_matrix = next(iter(find_linears(find_blocks(model)[1][0])))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def dense_forward_s() -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            for batch in windows.split(args.batch_size):
                model(input_ids=batch.to(device), use_cache=False)
        sync()
        return time.perf_counter() - t

    if args.offload:  # the dense forward of an offloaded model: block by block, as the pruning runs
        dense_forward_s = offloaded_forward_s(model, windows, args.batch_size, device, sync)
    dense_forward_s()  # warm-up
    rows = []
    record_modes = {"on": [True], "off": [False], "both": [True, False]}[args.records]
    for spec in args.methods.split(","):
        name, _, pattern = spec.partition(":")
        layerwise, method = ("owl", name[4:]) if name.startswith("owl-") else ("uniform", name)
        cfg = PruneConfig(method=method, pattern=pattern or "unstructured", nsamples=args.nsamples,
                          seqlen=args.seqlen, batch_size=args.batch_size, device=str(device), layerwise=layerwise,
                          sparsity=0.7 if layerwise == "owl" else 0.5)
        for record in record_modes:
            if original is None:
                discard_pruned_copies(model)
                model = build(args)[0]
            else:
                model.load_state_dict(original, strict=False)
            before = dense_forward_s()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            reset_peak_host()
            sync()
            resident = [resident_weight_bytes(model)]

            def on_event(event) -> None:  # inside a block, while its weights are loaded
                if isinstance(event, MatrixPruned) and event.matrix == first_matrix:
                    resident.append(resident_weight_bytes(model))
            with AnonPeak() as anon:
                result = prune_model(model, windows, cfg, record=record, on_event=on_event)
                sync()
            host = peak_host_mib()
            # the dense time on either side of the pruning, the smaller: these machines are noisy
            dense_s = before
            if original is not None:
                model_pruned = {k: v.clone() for k, v in model.state_dict().items() if v.dim() == 2}
                model.load_state_dict(original, strict=False)
                dense_s = min(before, dense_forward_s())
                model.load_state_dict(model_pruned, strict=False)
                del model_pruned
            ev_tokens = torch.randint(0, vocab, (1, args.eval_windows * args.seqlen), generator=torch.Generator().manual_seed(1))
            ppl = None if args.offload else perplexity(model, ev_tokens, args.seqlen, "random tokens",
                                                       batch_size=args.batch_size, device=device)
            t = result.timings
            rows.append({
                "model": label, "device": str(device), "dtype": args.dtype, "calib": f"{args.nsamples}x{args.seqlen}",
                "method": cfg.label, "records": "on" if record else "off", "dense_forward_s": round(dense_s, 2),
                "prune_s": round(result.seconds, 2), "ratio": round(result.seconds / dense_s, 2),
                "select_share": round(t["select_s"] / result.seconds, 3),
                "peak_host_mib": round(host), "peak_anon_mib": round(anon.peak),
                "weights_in_memory_mib": round(max(resident) / 2**20),
                "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
                "block_mib": round(block_bytes / 2**20),
                "eval_tokens_per_s": round(ppl.tokens_per_s) if ppl else None,
                "model_gib": round(model_gib, 2), "device_cap_gib": args.device_memory_gib,
                "phases_s": "/".join(f"{t.get(k, 0):.1f}" for k in ("capture_s", "calibrate_s", "select_s", "propagate_s")),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
