"""Structure removers against plain reference implementations on tiny models of several families: the heads and
channels each method removes, the exactness of removing what contributes nothing (or a constant, with FLAP's bias
compensation), block influence against a direct computation, and the achieved fraction counted exactly."""
from __future__ import annotations

import pytest
import torch
import transformers
from conftest import TINY_CONFIGS, TINY_VOCAB

from wanda_engine.config import PruneConfig
from wanda_engine.inputs.layers import find_blocks
from wanda_engine.pruning.pipeline import prune_model

WIDTH_METHODS = ("wanda-sp", "flap", "magnitude-sp")
GQA_FAMILIES = ("llama", "mistral", "qwen2", "gemma2")


def tiny(arch: str = "llama", layers: int = 2, seed: int = 0, **overrides) -> torch.nn.Module:
    """A random tiny causal LM of `arch` with `layers` blocks (config overrides on top of conftest's)."""
    cls_name, kwargs = TINY_CONFIGS[arch]
    config = getattr(transformers, cls_name)(vocab_size=TINY_VOCAB, **{**kwargs, "num_hidden_layers": layers,
                                                                       **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.config.use_cache = False
    return model


def windows(n: int = 8, length: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def config(method: str, ratio: float, **kwargs) -> PruneConfig:
    return PruneConfig(method=method, sparsity=ratio, nsamples=8, seqlen=32, **kwargs)


def layers_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(find_blocks(model)[1])


def projections(block: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The attention's and the MLP's output projections (o_proj/out_proj, down_proj/fc2)."""
    attention = block.self_attn
    out = getattr(attention, "o_proj", None) or attention.out_proj
    down = block.mlp.down_proj if hasattr(block, "mlp") else block.fc2
    return out, down


# ---------------------------------------------------------------- plain reference implementations

def reference_scores(method: str, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The issue's formulas, per input channel j of an output projection; x: its inputs [tokens, in]."""
    weight, x = weight.double(), x.double()
    if method == "wanda-sp":
        return weight.abs().sum(0) * x.pow(2).sum(0).sqrt()  # Σ_i |W_ij|·‖X_j‖₂
    if method == "flap":
        return x.var(0, unbiased=True) * weight.pow(2).sum(0)  # Var(X_j)·‖W_:j‖²
    return weight.norm(dim=0)  # ‖W_:j‖₂


def reference_prune(model: torch.nn.Module, tokens: torch.Tensor, method: str, ratio: float) -> list[tuple]:
    """Wanda-sp / FLAP / magnitude-sp with the published per-block ratio, plainly: block by block, the whole model
    runs on the tokens (earlier blocks already pruned) with hooks on the output projections; the int(ratio·heads)
    heads (in whole KV groups) and int(ratio·channels) channels of lowest score have their columns zeroed, which
    takes their contribution out exactly as removing them does. Returns per block (kept heads, kept channels)."""
    kept = []
    head_dim = model.config.head_dim if getattr(model.config, "head_dim", None) else \
        model.config.hidden_size // model.config.num_attention_heads
    for block in layers_of(model):
        out, down = projections(block)
        seen = {}
        hooks = [layer.register_forward_hook(lambda m, i, o, key=key: seen.setdefault(key, []).append(
            i[0].reshape(-1, i[0].shape[-1]))) for key, layer in (("out", out), ("down", down))]
        with torch.no_grad():
            model(tokens)
        for h in hooks:
            h.remove()
        heads, kv = out.in_features // head_dim, block.self_attn.k_proj.out_features // head_dim
        per = heads // kv
        channel = reference_scores(method, out.weight, torch.cat(seen["out"]))
        groups = channel.reshape(kv, per * head_dim).sum(1)
        gone_groups = torch.argsort(groups, stable=True)[: int(ratio * heads) // per]
        mlp = reference_scores(method, down.weight, torch.cat(seen["down"]))
        gone_channels = torch.argsort(mlp, stable=True)[: int(ratio * down.in_features)]
        with torch.no_grad():
            for g in gone_groups.tolist():
                out.weight[:, g * per * head_dim:(g + 1) * per * head_dim] = 0
            down.weight[:, gone_channels] = 0
        kept.append((tuple(h for h in range(heads) if h // per not in set(gone_groups.tolist())),
                     torch.tensor(sorted(set(range(down.in_features)) - set(gone_channels.tolist())))))
    return kept


ARCHS = ("llama", "qwen2", "gemma2", "opt")


@pytest.mark.parametrize("method", WIDTH_METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_the_removed_heads_and_channels_are_the_reference_ones(arch, method):
    dense = tiny(arch)
    reference = tiny(arch)
    tokens = windows()
    expected = reference_prune(reference, tokens, method, 0.5)
    result = prune_model(dense, tokens, config(method, 0.5, target="per-block"))
    record = result.structure
    for block, (heads, channels), original in zip(record.blocks, expected, layers_of(tiny(arch))):
        assert block.heads_kept == heads, (arch, method, block.block)
        assert block.channels_kept == len(channels)
        _, down = projections(layers_of(dense)[block.block])
        assert torch.equal(down.weight, projections(original)[1].weight[:, channels])  # the same columns, removed
    with torch.no_grad():  # zeroed or removed: the same function
        torch.testing.assert_close(dense(tokens).logits, reference(tokens).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_achieved_fraction_is_counted_on_the_model_itself(arch):
    model = tiny(arch)
    blocks_dense = sum(p.numel() for b in layers_of(model) for p in b.parameters())
    result = prune_model(model, windows(), config("flap", 0.3))
    record = result.structure
    blocks_kept = sum(p.numel() for b in layers_of(model) for p in b.parameters())
    assert (record.block_params_dense, record.block_params_kept) == (blocks_dense, blocks_kept)
    assert record.removed_fraction == 1 - blocks_kept / blocks_dense == result.sparsity
    assert record.model_params_kept == sum(p.numel() for p in model.parameters())
    assert abs(record.removed_fraction - 0.3) < 0.02  # one MLP channel is under 0.2% of a tiny block
    assert [b.removed_fraction for b in record.blocks] == [r.sparsity for r in result.blocks]


@pytest.mark.parametrize("arch", GQA_FAMILIES)
def test_grouped_query_attention_keeps_a_valid_config(arch):
    model = tiny(arch)
    result = prune_model(model, windows(), config("wanda-sp", 0.5, target="per-block"))
    cfg = model.config
    assert cfg.num_key_value_heads == 1 < TINY_CONFIGS[arch][1]["num_key_value_heads"]
    assert cfg.num_attention_heads == 2 and cfg.num_attention_heads % cfg.num_key_value_heads == 0
    for block in layers_of(model):
        attention = block.self_attn
        assert attention.q_proj.out_features == cfg.num_attention_heads * cfg.head_dim
        assert attention.k_proj.out_features == attention.v_proj.out_features == cfg.head_dim
        assert attention.num_key_value_groups == 2  # the groups' size is unchanged: whole groups went
    assert "whole KV groups" in result.structure.grouping
    with torch.no_grad():
        assert torch.isfinite(model(windows(2)).logits).all()


def _zero_contributions(model: torch.nn.Module) -> None:
    """KV group 0's columns of o_proj and the first half of down_proj's columns: they contribute exactly nothing."""
    with torch.no_grad():
        for block in layers_of(model):
            block.self_attn.o_proj.weight[:, :32] = 0  # heads 0 and 1 (head_dim 16), sharing KV head 0
            block.mlp.down_proj.weight[:, :64] = 0


@pytest.mark.parametrize("method", WIDTH_METHODS)
def test_removing_what_contributes_nothing_leaves_the_outputs_unchanged(method):
    model = tiny("llama")
    _zero_contributions(model)
    tokens = windows()
    with torch.no_grad():
        before = model(tokens).logits
    record = prune_model(model, tokens, config(method, 0.5, target="per-block")).structure
    assert all(b.heads_kept == (2, 3) and b.channels_kept == 64 for b in record.blocks)
    assert all(layer.mlp.down_proj.in_features == 64 for layer in layers_of(model))  # removed, not zeroed
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, before, rtol=1e-5, atol=1e-5)


def _constant_contributions(model: torch.nn.Module) -> None:
    """KV head 0's values are its bias alone, so heads 0 and 1 output that constant (their attention weights sum to
    1); MLP channels 0..63 have zero gate and up rows, so they carry silu(b_gate)·b_up whatever the input."""
    with torch.no_grad():
        for block in layers_of(model):
            block.self_attn.v_proj.weight[:16] = 0
            block.self_attn.v_proj.bias[:16] = torch.linspace(-1, 1, 16)
            block.mlp.gate_proj.weight[:64] = 0
            block.mlp.up_proj.weight[:64] = 0
            block.mlp.gate_proj.bias[:64] = torch.linspace(0.5, 2, 64)
            block.mlp.up_proj.bias[:64] = torch.linspace(-2, 2, 64)


@pytest.mark.parametrize("compensate", [True, False], ids=["with compensation", "without"])
def test_bias_compensation_keeps_a_removed_constant_contribution(compensate):
    model = tiny("llama", attention_bias=True, mlp_bias=True)
    _constant_contributions(model)
    tokens = windows()
    with torch.no_grad():
        before = model(tokens).logits
    record = prune_model(model, tokens, config("flap", 0.5, target="per-block",
                                               bias_compensation=compensate)).structure
    assert all(b.heads_kept == (2, 3) and b.channels_kept == 64 for b in record.blocks)  # fluctuation 0 goes first
    with torch.no_grad():
        after = model(tokens).logits
    if compensate:
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    else:
        assert (after - before).abs().max() > 1e-2


def test_the_fluctuation_is_the_variance_even_where_the_mean_dwarfs_the_spread():
    """FLAP's Var(X_j) from batches (Chan's update) equals torch.var over all tokens, also for a channel whose mean is
    10⁴ times its spread, where Σx² − N·x̄² in fp32 would cancel to noise."""
    from wanda_engine.methods.scoring import InputStats

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 40, 8, generator=generator)
    x[..., 0] = 1e3 + 0.1 * x[..., 0]
    stats = InputStats(8, torch.device("cpu"), with_sum=True)
    for batch in x.split(4, dim=1):  # uneven batches of tokens
        stats.add(batch)
    tokens = x.reshape(-1, 8).double()
    torch.testing.assert_close(stats.mean, tokens.mean(0), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.variance, tokens.var(0, unbiased=True), rtol=1e-4, atol=1e-9)


def test_compensation_gives_a_model_without_biases_its_biases():
    model = tiny("llama")  # attention_bias and mlp_bias off
    prune_model(model, windows(), config("flap", 0.3, bias_compensation=True))
    for block in layers_of(model):
        assert block.self_attn.o_proj.bias is not None and block.mlp.down_proj.bias is not None
        assert block.mlp.down_proj.bias.abs().sum() > 0


def test_magnitude_sp_from_the_weights_alone_removes_what_it_removes_calibrated():
    calibrated, alone = tiny("qwen2"), tiny("qwen2")
    prune_model(calibrated, windows(), config("magnitude-sp", 0.3))
    prune_model(alone, windows(), config("magnitude-sp", 0.3, calibrate=False))
    assert all(torch.equal(a, b) for a, b in zip(calibrated.state_dict().values(), alone.state_dict().values()))


# ---------------------------------------------------------------- depth

def direct_block_influence(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """ShortGPT's BI per block, directly: hooks take every block's input and output hidden states on the dense
    model; BI = 1 − mean over tokens of cos(x_in, x_out)."""
    pairs = []
    hooks = [block.register_forward_hook(lambda m, i, o: pairs.append((i[0], o[0] if isinstance(o, tuple) else o)))
             for block in layers_of(model)]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    return torch.stack([1 - torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean()
                        for x, y in pairs])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_block_influence_ranks_blocks_as_the_direct_computation(arch):
    model = tiny(arch, layers=6)
    tokens = windows()
    influence = direct_block_influence(model, tokens)
    record = prune_model(model, tokens, config("block-influence", 1 / 3)).structure
    torch.testing.assert_close(torch.tensor([b.influence for b in record.blocks], dtype=torch.float64), influence,
                               rtol=1e-5, atol=1e-6)
    expected = sorted(torch.argsort(influence)[:2].tolist())
    assert list(record.removed_blocks) == expected
    assert model.config.num_hidden_layers == len(layers_of(model)) == 4
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == 4
    assert [block.self_attn.layer_idx for block in layers_of(model)] == [0, 1, 2, 3]
    with torch.no_grad():  # the KV cache is indexed by the kept blocks
        out = model(tokens[:1, :8], use_cache=True)
        step = model(tokens[:1, 8:9], cache=out.cache, use_cache=True)
    assert out.cache.get_seq_length() == 9 and torch.isfinite(step.logits).all()


def _removed_only_up_to_the_cutoff(hist) -> bool:
    """No structure scoring above the cut-off was removed: every bin that starts above it has no removed count."""
    return all(not gone for low, gone in zip(hist.edges[:-1], hist.removed) if low > hist.cutoff + 1e-12)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_the_score_distributions_split_kept_and_removed_at_the_cutoff(allocation):
    model = tiny("llama", layers=3)
    record = prune_model(model, windows(), config("flap", 0.3, allocation=allocation)).structure
    groups, channels = record.distributions
    assert (groups.structure, channels.structure) == ("KV group", "MLP channel")
    assert sum(channels.removed) == sum(b.channels - b.channels_kept for b in record.blocks)
    assert sum(channels.kept) == sum(b.channels_kept for b in record.blocks)
    assert sum(groups.removed) == sum(b.kv_heads - len(b.heads_kept) // 2 for b in record.blocks)
    for block in record.blocks:  # each block's channels on the shared bins, cut where its selection cut them
        hist = block.channel_scores
        assert hist.edges == channels.edges and sum(hist.removed) == block.channels - block.channels_kept
        assert _removed_only_up_to_the_cutoff(hist)
    if allocation == "global":  # one cut for every block, on standardized scores
        assert channels.scale == "asinh(standardized score)" and channels.cutoff == groups.cutoff is not None
        assert _removed_only_up_to_the_cutoff(channels)
    else:
        assert channels.scale == "log10 score" and channels.cutoff is None  # each block has its own
