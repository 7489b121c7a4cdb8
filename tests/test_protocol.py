"""One learning protocol: one registry, one train entry point, one compare for every family."""

import pytest
import torch

import bioprop as bp
from bioprop.experiments.cli import main
from bioprop.rules import UnsupportedCircuitError
from bioprop.training.optim import make_optimizer


def test_bioprop_rules_lists_every_family_with_its_circuit_kind(capsys):
    assert main(["rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = {line.split()[1] for line in lines}
    assert {"layered", "settling", "recurrent", "spiking"} <= kinds
    names = {line.split()[0] for line in lines}
    assert {"bp", "fa", "ep", "dni", "bptt", "dni-aux", "spiking-fa"} <= names


def test_a_name_on_two_kinds_asks_for_the_kind_and_train_picks_it_from_the_circuit():
    assert set(bp.rules.kinds_of("dni")) == {"layered", "recurrent"}
    with pytest.raises(ValueError, match=r"'dni' exists for .* circuits; pass kind="):
        bp.rules.get("dni")
    assert bp.rules.get("dni", kind="layered").kind == "layered"


def test_a_rule_refuses_a_circuit_of_another_kind_before_any_training():
    c = bp.Circuit.layered([4, 5, 3], activation="hard-sigmoid")
    with pytest.raises(UnsupportedCircuitError, match=r"dynamics='instant'.*leaky"):
        bp.rules.get("ep").attach(c)
    data = bp.data.linear_teacher(n_train=8, n_test=4, n_in=4, n_out=3, seed=0)
    with pytest.raises(UnsupportedCircuitError, match="trains settling circuits.*is layered"):
        bp.train(c, "ep", data, progress=False)


def test_compare_refuses_a_rule_the_task_cannot_build_a_circuit_for(tmp_path):
    with pytest.raises(ValueError, match=r"rule 'ep' trains settling circuits.*tasks rule 'ep'"):
        bp.compare("linear", rules=["bp", "ep"], seeds=1, out=tmp_path / "x", quick=True)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_compare_cli_answers_a_mismatch_in_one_line(capsys):
    assert main(["compare", "--task", "linear", "--rules", "bptt", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recurrent" in err[0] and "copy" in err[0]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "--rules", ","], "expected comma-separated names"),
        (["compare", "--device", "toaster", "--quick"], "not a torch device"),
    ],
)
def test_bad_compare_arguments_get_one_clear_line(argv, words, capsys):
    with pytest.raises(SystemExit) if argv[1] == "--rules" else _nothing():
        rc = main(argv)
        assert rc == 2
    assert words in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_optimizer_builder_names_a_group_lr_it_cannot_place():
    c = bp.Circuit.layered([4, 5, 3], seed=0)
    rule = bp.rules.get("fa").attach(c)
    with pytest.raises(ValueError, match=r"module_lr.*no parameter group"):
        make_optimizer(("adam", {"lr": 1e-3, "module_lr": 1e-2}), c, rule)
    opt = make_optimizer(("sgd", {"lr": 0.1}), c, rule)
    assert [g["name"] for g in opt.param_groups] == ["circuit"]
    assert opt.param_groups[0]["lr"] == 0.1


def test_recordings_state_the_rule_its_kind_and_every_optimizer_group(tmp_path):
    c = bp.Circuit.layered([4, 5, 3], seed=0)
    data = bp.data.linear_teacher(n_train=16, n_test=4, n_in=4, n_out=3, seed=0)
    bp.train(
        c,
        "fa",
        data,
        optimizer=("sgd", {"lr": 0.1}),
        progress=False,
        record=bp.Record(tmp_path / "r.h5", every=1),
    )
    with bp.load(tmp_path / "r.h5") as rec:
        attrs = rec.attrs
    assert attrs["rule"] == "fa" and attrs["rule_kind"] == "layered"
    assert '"lr": 0.1' in attrs["optimizer_groups"]
    assert attrs["created"].endswith("+00:00")


def test_the_data_order_is_drawn_from_the_seeded_purpose_stream():
    from bioprop.training.loop import epoch_order

    a, b = epoch_order(3, 1, 50), epoch_order(3, 1, 50)
    assert torch.equal(a, b) and not torch.equal(a, epoch_order(3, 2, 50))
    assert torch.equal(a, torch.randperm(50, generator=bp.seeding.generator(3, "data order", 1)))


@pytest.mark.parametrize(
    "task, rules, kinds",
    [
        ("fashion-mnist", "bp,fa,ep,dni,cdni", {"layered", "settling"}),
        ("copy", "bptt,dni,dni-aux", {"recurrent"}),
        ("spiking-fashion-mnist", "spiking-fa", {"spiking"}),
    ],
)
def test_compare_runs_every_family_and_writes_one_summary_schema(task, rules, kinds, tmp_path):
    import xarray as xr

    out = tmp_path / task
    argv = ["compare", "--task", task, "--rules", rules, "--quick", "--seeds", "1"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    with xr.open_dataset(out / "summary.nc", engine="h5netcdf") as ds:
        assert {"final_loss", "test_error", "angle_to_bp", "wall_time"} <= set(ds.data_vars)
        assert ds["final_loss"].dims == ("rule", "seed")
        assert list(ds.rule.values) == rules.split(",")
        assert set(ds["kind"].values) == kinds
        assert (ds["wall_time"] > 0).all()
        assert ds["final_loss"].notnull().all()
    assert (out / "report.png").stat().st_size > 1000
