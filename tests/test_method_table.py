"""The one table of methods: a method registered from this file alone runs through the CLI, a sweep and a
figure; the built-in entries say exactly what the settings accept and refuse; the table stays torch-free."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_protect import one_sentence

from wanda_engine.cli.main import main
from wanda_engine.config import PruneConfig
from wanda_engine.core.errors import ConfigError
from wanda_engine.core.palette import BLUE, GREEN, ORANGE, PURPLE, SKY, MethodStyle
from wanda_engine.methods import table
from wanda_engine.methods.table import GROUPS, Kind, Method, Pattern, Structure, Variant
from wanda_engine.outputs.figures.perplexity import perplexity_bars, perplexity_vs_sparsity
from wanda_engine.store.run_store import RunStore, load_run

LOOK = MethodStyle("#000000", "dot", "star", "+")  # no built-in method's colour, dash or marker


def squared_norm_score(weight: torch.Tensor, stats, config) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂²: Wanda's score with the activation norm squared."""
    return weight.abs().float() * stats.channel_norms.to(weight.device).pow(2).view(1, -1)


@pytest.fixture
def squared():
    """The method `wanda_sq`, in the table for one test only."""
    method = table.register(Method("wanda_sq", Kind.MASK, squared_norm_score, "Wanda squared |W|·‖X‖₂²", LOOK))
    yield method
    table.unregister(method.name)


def reference_mask(weight: torch.Tensor, norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A plain per-row selection: in each row, the int(in·sparsity) lowest |W|·‖X‖² (True = pruned)."""
    score = weight.abs().float() * norms.pow(2).view(1, -1)
    k = int(weight.shape[1] * sparsity)
    mask = torch.zeros_like(weight, dtype=torch.bool)
    for row in range(weight.shape[0]):
        mask[row, torch.argsort(score[row], stable=True)[:k]] = True
    return mask


FAST = ["--nsamples", "4", "--seqlen", "32", "--quiet"]


def test_a_method_registered_here_prunes_through_the_cli_to_its_reference_masks(squared, tiny_model_dir, tmp_path,
                                                                                capsys):
    out, saved = tmp_path / "run", tmp_path / "model"
    rc = main(["prune", "--model", str(tiny_model_dir), "--method", "wanda_sq", *FAST, "--eval", "none",
               "--out", str(out), "--save-model", str(saved)])
    assert rc == 0, capsys.readouterr().err
    run = load_run(out)
    assert run.record.request.prune.method == "wanda_sq" and run.record.label() == "wanda_sq 50%"
    assert run.record.request.prune.resolved_group == "row"  # the table's default group
    dense, pruned = load_file(tiny_model_dir / "model.safetensors"), load_file(saved / "model.safetensors")
    records = run.records()
    assert records
    unlike_wanda = 0
    for rec in records:
        norms = torch.from_numpy(rec.arrays["channel_norms"].copy())
        key = f"{rec.full_name}.weight"
        expected = reference_mask(dense[key], norms, 0.5)
        assert torch.equal(pruned[key] == 0, expected), rec.full_name
        assert torch.equal(pruned[key][~expected], dense[key][~expected])  # the kept weights are untouched
        wanda = reference_mask(dense[key], norms.sqrt(), 0.5)  # |W|·‖X‖ ranks rows differently
        unlike_wanda += not torch.equal(expected, wanda)
        assert rec.method == "wanda_sq" and set(rec.hist) == {"magnitude", "wanda", "wanda_sq"}
        assert rec.overlap.reference == "magnitude"
    assert unlike_wanda, "the squared norm should change some masks, or this test proves nothing"


def test_a_method_registered_here_runs_in_a_sweep_and_draws_in_its_own_look(squared, tiny_model_dir, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    runs_dir = tmp_path / "runs"
    rc = main(["sweep", "--model", str(tiny_model_dir), "--methods", "wanda,wanda_sq", "--sparsities", "0.5,0.6",
               *FAST, "--eval-seqlen", "32", "--eval-windows", "2", "--name", "sq", "--runs-dir", str(runs_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0, lines
    summary = json.loads(lines[-1])
    assert summary["status"] == "complete" and summary["runs"] == summary["complete"] == 4
    store = RunStore(runs_dir)
    records = [run.record for run in store.list() if run.complete]
    mine = [r for r in records if r.request.prune.method == "wanda_sq"]
    assert sorted(r.request.prune.target_sparsity for r in mine) == [0.5, 0.6]
    assert all(r.sparsity == pytest.approx(r.request.prune.target_sparsity, abs=0.01) for r in mine)

    lines = {trace.name: trace for trace in perplexity_vs_sparsity(records).data}
    line = lines["wanda_sq"]
    assert (line.line.color, line.line.dash, line.marker.symbol) == (LOOK.colour, LOOK.dash, LOOK.symbol)
    assert list(line.y) == [r.ppl for r in sorted(mine, key=lambda r: r.request.prune.target_sparsity)]
    assert lines["wanda"].line.color == BLUE
    bars = perplexity_bars(records).data[0]
    colours = dict(zip(bars.x, bars.marker.color))
    assert {colours[r.label()] for r in mine} == {LOOK.colour}


def test_a_method_registered_here_is_offered_by_the_forms_the_sweep_and_the_cli(squared, capsys):
    from app import forms
    from wanda_engine.sweep.grid import parse_method

    assert forms.method_choices()["wanda_sq"] == "Wanda squared |W|·‖X‖₂²"
    assert list(forms.method_choices())[-1] == "wanda_sq"  # after the built-in ones
    request = forms.build_request({**forms.DEFAULTS, "method": "wanda_sq"}, RunStore("/nonexistent-store"))
    assert request.prune.method == "wanda_sq" and request.prune.resolved_group == "row"
    assert parse_method(" wanda_sq ") == ("wanda_sq", False)
    with pytest.raises(ConfigError, match="only wanda has a variant"):
        parse_method("wanda_sq-variant")
    for command in ("prune", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "wanda_sq" in capsys.readouterr().out, command


def test_after_the_fixture_the_table_is_the_built_in_one():
    assert table.methods() == table.BUILT_IN
    assert list(table.choices()) == ["magnitude", "wanda", "wanda-variant", "sparsegpt", "ria"]


# ---------------------------------------------------------------- the built-in entries and the settings' rules

@pytest.mark.parametrize("method", table.BUILT_IN, ids=lambda m: m.name)
def test_each_built_in_entry_says_what_the_settings_accept(method: Method):
    def accepted(**kwargs) -> bool:
        try:
            PruneConfig(method=method.name, **kwargs)
        except ConfigError as e:
            assert one_sentence(str(e)), str(e)
            return False
        return True

    for group in GROUPS:
        assert accepted(group=group) == (group in method.groups), group
    assert accepted(pattern="unstructured") == (Pattern.UNSTRUCTURED in method.patterns)
    assert accepted(pattern="2:4") == (Pattern.NM in method.patterns)
    assert accepted(variant=True) == (method.variant is not None)
    assert accepted(protect_channels=0.01) == method.allows_protection
    assert accepted(weight_update="obs") == method.allows_weight_update
    assert accepted(calibrate=False) == (not method.needs_activations)
    config = PruneConfig(method=method.name)
    assert config.resolved_group == method.default_group and config.method_entry is method
    assert config.needs_gram == method.needs_gram
    assert callable(method.function)  # its math imports


def test_the_built_in_entries_are_the_references_and_look_as_before():
    assert table.names() == ("magnitude", "wanda", "sparsegpt", "ria", "wanda-sp", "flap", "magnitude-sp",
                             "block-influence")
    assert {m.name: m.default_group for m in table.BUILT_IN} == {"magnitude": "matrix", "wanda": "row",
                                                                 "sparsegpt": "row", "ria": "matrix", "wanda-sp": "",
                                                                 "flap": "", "magnitude-sp": "", "block-influence": ""}
    assert {m.name: m.kind for m in table.BUILT_IN} == {"magnitude": Kind.MASK, "wanda": Kind.MASK,
                                                        "sparsegpt": Kind.SOLVER, "ria": Kind.MASK,
                                                        **dict.fromkeys(table.removers(), Kind.STRUCTURE)}
    assert table.removers() == ("wanda-sp", "flap", "magnitude-sp", "block-influence")
    assert {choice: table.look(choice) for choice in table.choices()} == {
        "wanda": MethodStyle(BLUE, "solid", "circle", ""), "magnitude": MethodStyle(ORANGE, "dash", "square", "/"),
        "sparsegpt": MethodStyle(GREEN, "dot", "diamond", "."), "ria": MethodStyle(PURPLE, "dashdot", "triangle-up", "x"),
        "wanda-variant": MethodStyle(SKY, "longdash", "x", "\\")}
    assert table.choices()["wanda-variant"] == "Wanda variant (adaptive α)"


def test_one_parser_of_a_method_choice():
    wanda = table.get("wanda")
    assert table.parse_choice("wanda") == (wanda, False) and table.parse_choice(" wanda-variant") == (wanda, True)
    assert table.choice("wanda", True) == "wanda-variant" == PruneConfig(variant=True).choice
    for bad, words in (("magnitude-variant", "only wanda has a variant"), ("prune-it", "is not one of magnitude")):
        with pytest.raises(ConfigError, match=words) as caught:
            table.parse_choice(bad)
        assert one_sentence(str(caught.value))


def test_a_new_entrys_capabilities_are_the_settings_rules():
    narrow = Method("narrow", Kind.MASK, squared_norm_score, "Narrow", LOOK, groups=("row",),
                    patterns=(Pattern.UNSTRUCTURED,), allows_protection=False, allows_weight_update=False)
    remover = Method("heads", Kind.STRUCTURE, squared_norm_score, "Heads", LOOK, allows_protection=False,
                     allows_weight_update=False, groups=(), default_group="", patterns=(Pattern.UNSTRUCTURED,),
                     removes=Structure.WIDTH, own_mask="removes whole heads")
    table.register(narrow)
    table.register(remover)
    try:
        assert PruneConfig(method="narrow").resolved_group == "row"
        for kwargs, words in (({"group": "matrix"}, "group 'matrix' does not apply to method 'narrow'"),
                              ({"pattern": "2:4"}, "pattern '2:4' does not apply to method 'narrow'"),
                              ({"protect_channels": 0.01}, "protect_channels does not apply to method 'narrow'"),
                              ({"weight_update": "obs"}, "weight_update 'obs' does not apply to method 'narrow'"),
                              ({"variant": True}, "applies only to method 'wanda'"),
                              ({"calibrate": False}, "method 'narrow' scores weights by their activations")):
            with pytest.raises(ConfigError, match=words) as caught:
                PruneConfig(method="narrow", **kwargs)
            assert one_sentence(str(caught.value))
        # a structure remover runs (issue 20); its entry still decides what its settings refuse
        assert PruneConfig(method="heads", sparsity=0.2).structure is Structure.WIDTH
        for kwargs, words in (({"pattern": "2:4"}, "pattern '2:4' does not apply to method 'heads', which removes whole"),
                              ({"group": "row"}, "group 'row' does not apply to method 'heads'"),
                              ({"sparsity": 0.0}, "the ratio to remove must be a number in \\(0, 1\\)")):
            with pytest.raises(ConfigError, match=words) as caught:
                PruneConfig(method="heads", **kwargs)
            assert one_sentence(str(caught.value))
        with pytest.raises(ConfigError, match="says what it removes"):
            Method("odd", Kind.STRUCTURE, squared_norm_score, "Odd", LOOK, allows_protection=False,
                   allows_weight_update=False, groups=(), default_group="", patterns=(Pattern.UNSTRUCTURED,))
    finally:
        table.unregister("narrow")
        table.unregister("heads")


@pytest.mark.parametrize("kwargs,words", [
    ({"name": "Bad Name"}, "lower-case letters"),
    ({"name": "x-variant"}, "lower-case letters"),
    ({"math": "no module"}, "'module:function'"),
    ({"default_group": "matrix", "groups": ("row",)}, "default group"),
    ({"kind": Kind.SOLVER}, "mask methods only"),
    ({"variant": Variant("v", LOOK), "kind": Kind.SOLVER, "allows_protection": False,
      "allows_weight_update": False}, "mask methods only"),
    ({"needs_activations": False, "needs_gram": True}, "Gram matrix"),
])
def test_an_incoherent_entry_is_refused_in_one_sentence(kwargs, words):
    with pytest.raises(ConfigError, match=words) as caught:
        Method(**{"name": "odd", "kind": Kind.MASK, "math": squared_norm_score, "label": "Odd", "look": LOOK, **kwargs})
    assert one_sentence(str(caught.value))


def test_registering_twice_or_removing_a_built_in_is_refused():
    with pytest.raises(ConfigError, match="already in the table"):
        table.register(table.get("wanda"))
    with pytest.raises(ConfigError, match="built in"):
        table.unregister("wanda")


def test_the_math_is_imported_on_first_use():
    lazy = Method("lazy", Kind.MASK, "wanda_engine.methods.scoring:wanda_score", "Lazy", LOOK)
    from wanda_engine.methods.scoring import wanda_score

    assert lazy.function is wanda_score
    missing = Method("missing", Kind.MASK, "wanda_engine.methods.nowhere:score", "Missing", LOOK)
    with pytest.raises(ConfigError, match="cannot be imported"):
        missing.function


def test_the_table_the_settings_and_the_style_import_without_torch():
    code = ("import sys; import wanda_engine.methods.table, wanda_engine.config, wanda_engine.outputs.figures.style; "
            "from wanda_engine.methods import table; table.choices(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
