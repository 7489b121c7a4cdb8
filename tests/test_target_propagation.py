"""Target propagation (tp, dtp, dtp-drl, ddtp-linear): the Gauss–Newton limit of exact
inverses, the difference correction, the inverses' learning, schedules, locality, errors."""

import pytest
import torch
from conftest import tanh_to_linear_circuit

import bioprop as bp
from bioprop.analysis.target_propagation import gauss_newton_targets
from bioprop.rules.contract import UnsupportedCircuitError
from bioprop.rules.target_propagation import ExactInversePathway, InversePathway
from bioprop.training.optim import groups_of, make_optimizer

MSE = bp.losses.get("mse")
CE = bp.losses.get("cross-entropy")


def square_circuit(activation="tanh", seed=1, n=6, depth=4):
    """An invertible chain: square layers with orthogonal weights (float64)."""
    return bp.Circuit.layered(
        [n] * (depth + 1),
        activation=activation,
        output_activation="linear",
        init=bp.init.orthogonal(),
        seed=seed,
    ).double()


def batch(n_in, n_out=None, n=7, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    if labels:
        return x, torch.randint(0, n_out or n_in, (n,), generator=g)
    return x, torch.randn(n, n_out, generator=g, dtype=torch.float64)


def gn_targets(circuit, state, targets, top):
    """Δh_l^GN = J_{top←l}⁺ (ĥ_top − h_top) for every population with a target below top."""
    order = circuit.order()
    out = {}
    for pop in targets:
        if pop == top:
            continue
        chain = order[order.index(pop) + 1 : order.index(top) + 1]
        ws = [circuit.incoming(q)[0].weight.detach() for q in chain]
        fps = [circuit.populations[q].act.fprime(state.u[q], state.r[q]) for q in chain]
        out[pop] = gauss_newton_targets(ws, fps, targets[top] - state.r[top])[0]
    return out


def exact_inverse_targets(rule, activation, **hyperparameters):
    """``rule`` with exact inverses on a square circuit: the circuit, the rule, and the forward
    state and targets of a labelled batch."""
    c = square_circuit(activation)
    r = bp.rules.get(rule, inverses="exact", **hyperparameters).attach(c)
    x, y = batch(6)
    state = r.forward(c, x)
    targets, _ = r.targets(c, state, y, CE)
    return c, r, state, targets


# -- the Gauss–Newton limit -------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["tp", "dtp", "dtp-drl"])
@pytest.mark.parametrize("first_target", ["last-hidden", "output"])
@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_exact_inverses_and_a_tiny_step_give_the_gauss_newton_target_at_every_layer(
    rule, first_target, activation
):
    c, r, state, targets = exact_inverse_targets(
        rule, activation, target_step=1e-5, first_target=first_target
    )
    assert all(isinstance(g, ExactInversePathway) for g in c.feedback_pathways())
    top = r.top(c)
    assert set(targets) == set(c.hidden()) | ({top} if top == c.output else set())
    gn = gn_targets(c, state, targets, top)
    assert len(gn) >= 2
    for pop, want in gn.items():
        assert bp.analysis.angle(targets[pop] - state.r[pop], want) < 1.0, pop


def test_the_gauss_newton_agreement_is_first_order_a_large_step_breaks_it():
    c, r, state, targets = exact_inverse_targets("dtp", "tanh", target_step=300.0)
    gn = gn_targets(c, state, targets, r.top(c))
    assert max(bp.analysis.angle(targets[p] - state.r[p], g) for p, g in gn.items()) > 1.0


def test_with_exact_inverses_a_linear_circuit_needs_no_small_step():
    c, r, state, targets = exact_inverse_targets("tp", "linear", target_step=50.0)
    for pop, want in gn_targets(c, state, targets, r.top(c)).items():
        assert torch.allclose(targets[pop] - state.r[pop], want, atol=1e-10), pop


# -- the difference correction ----------------------------------------------------------------


@pytest.mark.parametrize("rule", ["dtp", "dtp-drl"])
def test_dtp_without_an_error_leaves_every_target_at_the_activity_for_any_inverse(rule):
    c = tanh_to_linear_circuit()
    r = bp.rules.get(rule).attach(c)  # freshly drawn g: far from any inverse
    x, _ = batch(10, labels=False, n_out=3)
    state = r.forward(c, x)
    y = state.r[c.output].clone()  # ŷ = y: ∂L/∂h = 0, so ĥ_top = h_top
    targets, _ = r.targets(c, state, y, MSE)
    for pop, t in targets.items():
        assert torch.equal(t, state.r[pop]), pop
    r.step(c, x, y, MSE)
    for pw in c.feedforward_pathways():
        assert torch.count_nonzero(pw.weight.grad) == 0, pw.name


def test_tp_without_an_error_still_moves_layers_its_imperfect_inverses_misplace():
    c = tanh_to_linear_circuit()
    r = bp.rules.get("tp").attach(c)
    x, _ = batch(10, labels=False, n_out=3)
    state = r.forward(c, x)
    y = state.r[c.output].clone()
    targets, _ = r.targets(c, state, y, MSE)
    assert torch.equal(targets[c.hidden()[-1]], state.r[c.hidden()[-1]])
    assert not torch.allclose(targets[c.hidden()[0]], state.r[c.hidden()[0]], atol=1e-3)


def test_ddtp_linear_targets_are_the_activity_plus_q_times_the_output_step():
    c = tanh_to_linear_circuit()
    r = bp.rules.get("ddtp-linear", target_step=0.5).attach(c)
    x, y = batch(10, 3)
    state = r.forward(c, x)
    targets, e = r.targets(c, state, y, CE)
    u_step = targets[c.output] - state.u[c.output]
    want = -(0.5 / x.shape[0]) * CE.output_error(
        state.u["output"], state.r["output"], y, c.populations["output"].act
    )
    assert torch.allclose(u_step, want)
    for pop in c.hidden():
        q = c.pathways[f"output->{pop}"]
        assert torch.allclose(targets[pop] - state.r[pop], u_step @ q.weight.t(), atol=1e-12)
    assert torch.allclose(e, -2.0 * u_step)


# -- the first target and the forward updates -------------------------------------------------


def test_the_last_hidden_layer_and_the_output_learn_as_in_bp_scaled_by_the_target_step():
    c = tanh_to_linear_circuit()
    n = 7
    r = bp.rules.get("dtp", target_step=0.3).attach(c)
    x, y = batch(10, 3, n=n)
    ref = bp.rules.bp_reference(c, x, y, CE)
    r.step(c, x, y, CE)
    top = c.hidden()[-1]
    w_out = c.incoming(c.output)[0]
    assert torch.allclose(w_out.weight.grad, ref.grads[f"{w_out.name}.weight"], atol=1e-12)
    w_top = c.incoming(top)[0]
    scale = 2 * 0.3 / n  # δ_top = 2 f′ (h − ĥ) = (2η̂/N) δ_BP
    assert torch.allclose(w_top.weight.grad, scale * ref.grads[f"{w_top.name}.weight"], atol=1e-12)


def test_every_forward_weight_and_bias_learns_unlike_lees_released_code():
    """Lee et al.'s code leaves W6 and B5 out of the forward update; here all learn."""
    c = tanh_to_linear_circuit()
    r = bp.rules.get("dtp").attach(c)
    x, y = batch(10, 3)
    r.step(c, x, y, CE)
    for pw in c.feedforward_pathways():
        assert pw.weight.grad is not None and torch.count_nonzero(pw.weight.grad) > 0, pw.name
        assert pw.bias.grad is not None and torch.count_nonzero(pw.bias.grad) > 0, pw.name


# -- the inverses -----------------------------------------------------------------------------


def test_inverse_pathways_are_listed_saved_moved_recorded_and_in_their_own_optimizer_group(
    tmp_path,
):
    c = tanh_to_linear_circuit()
    r = bp.rules.get("dtp").attach(c)
    inverses = list(c.feedback_pathways())
    assert [g.mirrors for g in inverses] == [
        "hidden1->hidden2",
        "hidden2->hidden3",
        "hidden3->hidden4",
    ]
    assert all(isinstance(g, InversePathway) and g.plastic for g in inverses)
    assert {f"pathways.{g.name}.weight" for g in inverses} <= set(c.state_dict())
    assert all(g.weight.dtype == torch.float64 for g in inverses)  # moved with the circuit
    spec = ("adam", {"lr": 1e-3, "inverse_lr": 5e-3})
    groups = {g["name"]: g for g in groups_of(make_optimizer(spec, c, r))}
    assert groups["inverse"]["lr"] == 5e-3 and groups["circuit"]["lr"] == 1e-3
    assert groups["inverse"]["parameters"] == sum(
        p.numel() for g in inverses for p in g.own_parameters()
    )
    data = bp.data.linear_teacher(n_in=10, n_out=3, n_train=64, n_test=16, seed=0)
    bp.train(
        bp.Circuit.layered([10, 8, 7, 6, 3], init=bp.init.xavier_uniform()),
        "dtp",
        data,
        optimizer=spec,
        batch_size=16,
        max_steps=4,
        record=bp.Record(tmp_path / "dtp.h5", every=2),
        progress=False,
    )
    with bp.load(tmp_path / "dtp.h5") as rec:
        g = rec["pathways/hidden2->hidden1"]
        assert g.attrs["mirrors"] == "hidden1->hidden2" and g.attrs["inverse"] == "learned"
        assert {"weight", "weight_update", "bias"} <= set(g.ds.data_vars)
        assert '"inverse"' in rec.attrs["optimizer_groups"]
        assert rec["targets/hidden1"].ds["inverse_loss"].notnull().all()


def test_inverse_options_reach_the_inverse_group_only():
    c = tanh_to_linear_circuit()
    r = bp.rules.get(
        "dtp-drl", inverse_options={"betas": (0.99, 0.9), "eps": 1e-5, "weight_decay": 2e-5}
    ).attach(c)
    spec = ("adam", {"lr": 1e-3, "betas": (0.9, 0.99), "inverse_lr": 1e-4})
    groups = {g["name"]: g for g in groups_of(make_optimizer(spec, c, r))}
    assert groups["inverse"]["betas"] == [0.99, 0.9] and groups["inverse"]["eps"] == 1e-5
    assert groups["inverse"]["weight_decay"] == 2e-5 and groups["inverse"]["lr"] == 1e-4
    assert groups["circuit"]["betas"] == [0.9, 0.99] and groups["circuit"]["weight_decay"] == 0


def test_the_inverse_loss_of_a_fresh_inverse_falls_tenfold_on_a_frozen_forward_net(tmp_path):
    c = bp.Circuit.layered(
        [12, 10, 10, 10, 3],
        activation="tanh",
        output_activation="linear",
        init=bp.init.xavier_uniform(),
        seed=0,
    )
    w0 = {pw.name: pw.weight.detach().clone() for pw in c.feedforward_pathways()}
    data = bp.data.linear_teacher(n_in=12, n_out=3, n_train=4096, n_test=16, seed=0)
    rule = bp.rules.get("dtp", schedule="alternating", sigma=0.1)  # epoch 0: inverses only
    bp.train(
        c,
        rule,
        data,
        optimizer=("adam", {"lr": 1e-3, "inverse_lr": 3e-2}),
        epochs=1,
        batch_size=16,
        record=bp.Record(tmp_path / "inv.h5", every=4),
        progress=False,
    )
    for pw in c.feedforward_pathways():
        assert torch.equal(pw.weight.detach(), w0[pw.name]), "the forward net moved"
    with bp.load(tmp_path / "inv.h5") as rec:
        for pop in ("hidden1", "hidden2"):
            loss = rec[f"targets/{pop}"].ds["inverse_loss"].values
            assert loss[-5:].mean() < 0.1 * loss[:2].mean(), (pop, loss[:2], loss[-5:])


def test_the_drl_trains_ddtp_linear_feedback_toward_gauss_newton_targets():
    """On a frozen linear net, Q_i minimising ‖Q_i J_i ε − ε‖² is J_i⁺: the targets become
    Gauss–Newton targets (Meulemans et al. 2020)."""
    c = bp.Circuit.layered([8, 8, 8, 8, 3], activation="linear", init=bp.init.orthogonal(), seed=0)
    c = c.double()
    rule = bp.rules.get("ddtp-linear", sigma=0.1).attach(c)
    opt = make_optimizer(("adam", {"lr": 0.0, "inverse_lr": 3e-3}), c, rule)
    x, y = batch(8, 3)
    state = rule.forward(c, x)

    def worst_angle():
        targets, _ = rule.targets(c, state, y, CE)
        gn = gn_targets(c, state, targets, c.output)
        return max(bp.analysis.angle(targets[p] - state.r[p], g) for p, g in gn.items())

    before = worst_angle()
    for s in range(1500):
        xs, _ = batch(8, 3, n=32, seed=s + 1)
        opt.zero_grad(set_to_none=True)
        rule.write_inverse_grads(c, rule.forward(c, xs))
        opt.step()
    assert before > 45 and worst_angle() < 5


# -- schedules --------------------------------------------------------------------------------


def test_parallel_trains_both_every_batch_alternating_switches_by_epoch():
    data = bp.data.linear_teacher(n_in=10, n_out=3, n_train=32, n_test=8, seed=0)
    for schedule, want in (
        ("parallel", ["both"] * 6),
        ("alternating", ["inverse"] * 2 + ["forward"] * 2 + ["inverse"] * 2),
    ):
        rule = bp.rules.get("dtp", schedule=schedule)
        seen = []

        def watch(step, signals, rule=rule, seen=seen):
            c = rule.circuit
            fw = c.pathways["input->hidden1"].weight.grad is not None
            inv = c.pathways["hidden2->hidden1"].weight.grad is not None
            seen.append({(True, True): "both", (False, True): "inverse"}.get((fw, inv), "forward"))

        bp.train(
            bp.Circuit.layered([10, 8, 7, 6, 3]),
            rule,
            data,
            optimizer=("sgd", {"lr": 0.01}),
            epochs=3,
            batch_size=16,
            progress=False,
            on_step=watch,
        )
        assert seen == want, schedule


def test_inverse_warmup_epochs_train_the_inverses_alone_first():
    rule = bp.rules.get("dtp-drl", inverse_warmup_epochs=2)
    phases = []
    for e in range(4):
        rule.on_epoch(e)
        phases.append(rule.phase)
    assert phases == ["inverse", "inverse", "both", "both"]


# -- bad options and circuits -----------------------------------------------------------------


@pytest.mark.parametrize(
    "options, named",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"target_step": 0}, "target_step"),
        ({"target_step": -0.1}, "target_step"),
        ({"schedule": "sometimes"}, "schedule"),
        ({"first_target": "input"}, "first_target"),
        ({"inverses": "magic"}, "inverses"),
        ({"inverse_warmup_epochs": -1}, "inverse_warmup_epochs"),
        ({"inverse_activation": "sine"}, "inverse_activation"),
        ({"inverse_init": "wild"}, "inverse_init"),
        ({"inverse_options": {"weight_decay": -1.0}}, "inverse_options"),
        ({"inverse_options": {"lr": 0.1}}, "inverse_options.*inverse_lr"),
    ],
)
def test_bad_options_are_refused_when_the_rule_is_made_naming_the_option(options, named):
    with pytest.raises(ValueError, match=named):
        bp.rules.get("dtp", **options)


def test_ddtp_linear_refuses_a_first_target_below_the_output():
    with pytest.raises(ValueError, match="first_target must be 'output'"):
        bp.rules.get("ddtp-linear", first_target="last-hidden")


def test_a_circuit_without_exact_inverses_is_refused_before_training():
    c = bp.Circuit.layered([6, 5, 4, 4, 3], init=bp.init.xavier_uniform())
    data = bp.data.linear_teacher(n_in=6, n_out=3, n_train=16, n_test=4, seed=0)
    with pytest.raises(
        UnsupportedCircuitError, match="inverses='exact'.*'hidden1->hidden2' is 4x5"
    ):
        bp.train(c, bp.rules.get("dtp", inverses="exact"), data, progress=False)
    relu = bp.Circuit.layered([6, 6, 6, 6, 3], activation="relu", init=bp.init.orthogonal())
    with pytest.raises(UnsupportedCircuitError, match="'relu'"):
        bp.rules.get("tp", inverses="exact").attach(relu)
    assert not list(c.feedback_pathways())  # nothing was installed


def test_a_circuit_that_is_not_a_chain_is_refused():
    c = bp.Circuit(seed=0)
    for name, n in (("input", 4), ("a", 5), ("b", 5), ("output", 2)):
        c.add_population(name, n, activation="tanh")
    for s, t in (("input", "a"), ("a", "b"), ("b", "output"), ("a", "output")):
        c.connect(s, t)
    with pytest.raises(UnsupportedCircuitError, match="chain of layers.*'a' sends 2"):
        bp.rules.get("dtp").attach(c)
    two = bp.Circuit.layered([4, 2])
    with pytest.raises(UnsupportedCircuitError, match="hidden population"):
        bp.rules.get("tp").attach(two)


# -- the claim on a small budget --------------------------------------------------------------


def test_dtp_trains_a_deep_tanh_net_where_tp_without_the_difference_correction_does_worse():
    data = bp.data.load_for_run("fashion-mnist", quick=True)
    errors = {}
    for rule in ("tp", "dtp"):
        c = bp.Circuit.layered(
            [784, 64, 64, 64, 64, 10],
            activation="tanh",
            output_activation="linear",
            init=bp.init.xavier_uniform(),
            seed=0,
        )
        run = bp.train(
            c,
            rule,
            data,
            loss="cross-entropy",
            optimizer=("adam", {"lr": 1e-3, "inverse_lr": 1e-3}),
            epochs=2,
            batch_size=64,
            progress=False,
        )
        errors[rule] = run.test_error
    assert errors["dtp"] < 0.45 and errors["tp"] > errors["dtp"] + 0.15, errors
