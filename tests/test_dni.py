"""Synthetic gradients (dni, cdni, vfbn): limits, learning, update probability, locality,
recordings and configuration errors."""

import json
import math

import pytest
import torch
from conftest import batch

import bioprop as bp
from bioprop.analysis import dni as analysis_dni
from bioprop.rules import bp_reference
from bioprop.rules.synthetic_gradients import (
    ModulePathway,
    SyntheticGradientPathway,
    VFBNPathway,
    mlp,
    module_parameters,
    true_rate_gradients,
)
from bioprop.training.optim import make_optimizer

MSE = bp.losses.get("mse")


def layered_rule(name, **hyperparameters):
    """The layered rule ``name`` ("dni" is also a recurrent rule: ask for the layered one)."""
    return bp.rules.get(name, kind="layered", **hyperparameters)


@pytest.fixture(autouse=True)
def one_thread():
    """These circuits are tiny: intra-op threads only add overhead, and on a busy machine
    spinning OpenMP threads make each step many times slower.  Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def deep(seed=3, output_activation="logistic"):
    """6-7-5-4-3, tanh hidden, float64 (the shape of the other limit tests)."""
    c = bp.Circuit.layered(
        [6, 7, 5, 4, 3],
        activation="tanh",
        output_activation=output_activation,
        init=bp.init.uniform(0.6),
        seed=seed,
    )
    return c.double()


def forward_grads(circuit):
    return {
        f"{pw.name}.{what}": getattr(pw, what).grad
        for pw in circuit.feedforward_pathways()
        for what in ("weight", "bias")
    }


def make_oracle(rule, truth):
    """Replace every module's prediction by the true ∂ℓ/∂h of this batch."""
    for pop, module in rule.modules.items():
        module.predict = lambda h, y, loss=None, create_graph=False, p=pop: truth[p].clone()


# -- the limit: an oracle synthetic gradient is backprop --------------------------------------
@pytest.mark.parametrize("interfaces", [None, ["hidden2"]], ids=["every-layer", "one-interface"])
@pytest.mark.parametrize("name", ["dni", "cdni"])
def test_oracle_synthetic_gradient_makes_dni_updates_equal_bp(name, interfaces):
    c = deep()
    rule = layered_rule(name, interfaces=interfaces).attach(c)
    x, y = batch()
    make_oracle(rule, true_rate_gradients(c, x, y, MSE, rule.interfaces))
    signals = rule.step(c, x, y, MSE)
    ref = bp_reference(c, x, y, MSE)
    bp_grads, bp_delta = ref.grads, ref.delta
    got = forward_grads(c)
    assert set(bp_grads) == set(got)
    for k, g in bp_grads.items():
        assert got[k] is not None, k
        torch.testing.assert_close(got[k], g, atol=1e-6, rtol=0, msg=k)
    for pop in c.hidden():
        torch.testing.assert_close(signals.delta[pop], bp_delta[pop], atol=1e-6, rtol=0)
    # bootstrapped targets built on oracle gradients are the true gradients: L_M = 0
    for pop in rule.interfaces:
        assert signals.extra["module_loss"][pop] < 1e-20


def test_a_zero_synthetic_gradient_is_not_bp():
    # the untrained modules predict ĝ = 0 (last layer zero): the layers below get no update,
    # so the oracle test above is not passing trivially
    c = deep()
    rule = layered_rule("dni").attach(c)
    x, y = batch()
    rule.step(c, x, y, MSE)
    assert torch.count_nonzero(c.pathways["input->hidden1"].weight.grad) == 0
    assert torch.count_nonzero(c.pathways["hidden3->output"].weight.grad) > 0


# -- a module learns the gradient of a frozen network -----------------------------------------
def _frozen_problem(name):
    g = torch.Generator().manual_seed(5)
    if name == "dni":
        # linear hidden layer wider than the input: y = T x is a linear function of h, so
        # ∂ℓ/∂h = W2ᵀ(W2 h + b2 − y) is linear in h and an unconditioned linear module can learn it
        c = bp.Circuit.layered([4, 6, 3], activation="linear", init=bp.init.uniform(0.5), seed=1)
        # a well-conditioned first layer (orthonormal columns), so the map h -> ∂ℓ/∂h, which
        # goes through W1⁺, is learnable by Adam in a few hundred steps whatever the seed
        q, _ = torch.linalg.qr(torch.randn(6, 4, generator=g))
        with torch.no_grad():
            c.pathways["input->hidden"].weight.copy_(q)
        t = torch.randn(3, 4, generator=g)

        def draw(n):
            x = torch.randn(n, 4, generator=g)
            return x, x @ t.t()

    else:
        # tanh hidden, targets independent of x: only a module that sees y can predict ∂ℓ/∂h
        c = bp.Circuit.layered(
            [4, 6, 3], activation="tanh", output_activation="linear", init=bp.init.uniform(0.5)
        )

        def draw(n):
            return torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)

    return c, draw


@pytest.mark.parametrize("name", ["dni", "cdni"])
def test_module_trained_on_a_frozen_network_learns_the_true_gradient(name):
    c, draw = _frozen_problem(name)
    rule = layered_rule(name).attach(c)
    for pw in c.feedforward_pathways():
        pw.plastic = False
    before = {k: v.clone() for k, v in c.state_dict().items() if "sg:" not in k}
    opt = torch.optim.Adam(module_parameters(c), lr=1e-2)
    x_val, y_val = draw(256)
    truth = true_rate_gradients(c, x_val, y_val, MSE, ["hidden"])["hidden"]

    def error():
        with torch.no_grad():
            pred = rule.modules["hidden"].predict(c.sweep(x_val).r["hidden"], y_val)
        return float((pred - truth).norm() / truth.norm())

    start = error()
    for _ in range(600):
        opt.zero_grad()
        rule.step(c, *draw(64), MSE)
        opt.step()
    end = error()
    assert start == pytest.approx(1.0)  # ĝ = 0 before training
    assert end < start / 10, (start, end)
    after = {k: v for k, v in c.state_dict().items() if "sg:" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the network stayed frozen


# -- update probability ------------------------------------------------------------------------
def test_with_p_update_zero_no_layer_or_module_ever_changes(tiny_data):
    c = bp.Circuit.layered([8, 6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=2)
    rule = layered_rule("cdni", p_update=0.0)
    rule.attach(c)
    before = {k: v.clone() for k, v in c.state_dict().items()}
    bp.train(
        c,
        rule,
        tiny_data,
        optimizer=("sgd", {"lr": 0.5, "momentum": 0.9}),
        epochs=2,
        batch_size=8,
        progress=False,
    )
    for k, v in c.state_dict().items():
        assert torch.equal(before[k], v), k
    assert rule.steps == 16 and set(rule.update_counts.values()) == {0}


def test_update_statistics_match_p_update_and_layers_are_independent():
    p, steps = 0.3, 1500
    c = bp.Circuit.layered([3, 4, 4, 2], activation="tanh", init=bp.init.uniform(0.5), seed=0)
    rule = layered_rule("dni", p_update=p).attach(c)
    x, y = torch.randn(2, 3), torch.rand(2, 2)
    layers = ["hidden1", "hidden2", "output"]
    counts = dict.fromkeys(layers, 0)
    both = module_learned = 0
    for _ in range(steps):
        s = rule.step(c, x, y, MSE)
        moved = {pop: c.incoming(pop)[0].weight.grad is not None for pop in layers}
        for pop in layers:
            counts[pop] += moved[pop]
            assert s.extra["updated"][pop] == moved[pop]
        both += moved["hidden1"] and moved["hidden2"]
        # M_hidden1 learns exactly when the layer above its interface (hidden2) updates
        learned = c.pathways["sg:hidden1"].net[0].weight.grad is not None
        assert learned == moved["hidden2"]
        module_learned += learned
    sd = math.sqrt(p * (1 - p) / steps)
    for pop in layers:
        assert abs(counts[pop] / steps - p) < 4 * sd, (pop, counts[pop] / steps)
        assert rule.update_fraction()[pop] == counts[pop] / steps
    sd2 = math.sqrt(p * p * (1 - p * p) / steps)
    assert abs(both / steps - p * p) < 4 * sd2  # independent across layers
    assert abs(module_learned / steps - p) < 4 * sd


def test_update_draws_are_reproducible_and_resume_from_the_rule_state():
    def draws(rule, n):
        return [tuple(rule._draw_updates().values()) for _ in range(n)]

    c1, c2 = deep(), deep()
    r1 = layered_rule("dni", p_update=0.5).attach(c1, torch.Generator().manual_seed(7))
    r2 = layered_rule("dni", p_update=0.5).attach(c2, torch.Generator().manual_seed(7))
    assert draws(r1, 20) == draws(r2, 20)
    state = r1.state_dict()
    ahead = draws(r1, 10)
    r1.load_state_dict(state)
    assert draws(r1, 10) == ahead


# -- locality ----------------------------------------------------------------------------------
def lower_grads_after_nan_above(name, interfaces, nan_pathways):
    c = deep()
    rule = layered_rule(name, interfaces=interfaces).attach(c)
    x, y = batch()
    state = rule.forward(c, x)
    with torch.no_grad():
        for pw_name in nan_pathways:
            for p in c.pathways[pw_name].own_parameters():
                p.fill_(float("nan"))
    rule.teach(c, state, y, MSE)
    return {k: v.clone() for k, v in forward_grads(c).items() if k.startswith("input->")}


@pytest.mark.parametrize("name", ["dni", "cdni", "vfbn"])
def test_lower_layer_update_never_reads_weights_above_its_interface(name):
    # every layer decoupled: input->hidden1 learns from ĝ = M(h1) alone
    above = ["hidden1->hidden2", "hidden2->hidden3", "hidden3->output"]
    modules = [f"{'vfbn' if name == 'vfbn' else 'sg'}:{p}" for p in ("hidden2", "hidden3")]
    clean = lower_grads_after_nan_above(name, None, [])
    altered = lower_grads_after_nan_above(name, None, above + modules)
    for k in clean:
        assert torch.isfinite(altered[k]).all(), k
        assert torch.equal(clean[k], altered[k]), k


def test_below_one_interface_the_block_is_backprop_and_the_probe_sees_it():
    # interface at hidden2: input->hidden1 reads hidden1->hidden2 (inside its block) ...
    inside = lower_grads_after_nan_above("dni", ["hidden2"], ["hidden1->hidden2"])
    assert not torch.isfinite(inside["input->hidden1.weight"]).all()
    # ... but nothing above the interface
    clean = lower_grads_after_nan_above("dni", ["hidden2"], [])
    altered = lower_grads_after_nan_above(
        "dni", ["hidden2"], ["hidden2->hidden3", "hidden3->output"]
    )
    for k in clean:
        assert torch.equal(clean[k], altered[k]), k


# -- vfbn --------------------------------------------------------------------------------------
def test_vfbn_whose_virtual_network_is_the_true_upper_network_gives_bp():
    c = deep(output_activation="logistic")
    rule = layered_rule(
        "vfbn", hidden=(4,), activation="tanh", fit="both", interfaces=["hidden2"]
    ).attach(c)
    module = rule.modules["hidden2"]
    assert isinstance(module, VFBNPathway) and module.out_act.name == "logistic"
    module.copy_from([c.pathways["hidden2->hidden3"], c.pathways["hidden3->output"]])
    x, y = batch()
    truth = true_rate_gradients(c, x, y, MSE, ["hidden2"])["hidden2"]
    signals = rule.step(c, x, y, MSE)
    torch.testing.assert_close(signals.extra["synthetic"]["hidden2"], truth, atol=1e-10, rtol=0)
    ref = bp_reference(c, x, y, MSE)
    bp_grads, bp_delta = ref.grads, ref.delta
    got = forward_grads(c)
    for k, g in bp_grads.items():
        torch.testing.assert_close(got[k], g, atol=1e-6, rtol=0, msg=k)
    torch.testing.assert_close(signals.delta["hidden1"], bp_delta["hidden1"], atol=1e-6, rtol=0)
    assert signals.extra["module_loss"]["hidden2"] < 1e-12  # "both": gradient and output match


def test_vfbn_task_fit_is_a_local_supervised_head():
    # fit="task": v_f (linear) is trained on the task loss itself, L_M = ⟨ℓ(y, f_out(v_f(h)))⟩
    c = deep(output_activation="linear")
    rule = layered_rule("vfbn", fit="task", interfaces=["hidden2"]).attach(c)
    x, y = batch()
    s = rule.step(c, x, y, MSE)
    head = rule.modules["hidden2"].net[0]
    h = c.sweep(x).r["hidden2"]
    expected = 0.5 * ((h @ head.weight.t() + head.bias - y) ** 2).sum(1).mean()
    assert s.extra["module_loss"]["hidden2"] == pytest.approx(float(expected.detach()))
    g_expected = ((h @ head.weight.t() + head.bias - y).t() @ h) / x.shape[0]
    torch.testing.assert_close(head.weight.grad, g_expected)


@pytest.mark.parametrize("alpha_gs", [0.0, 1e-3, 1.0])
def test_vfbn_alpha_gs_weighs_the_gradient_term_of_the_output_fit(alpha_gs):
    # Miyato et al.'s objective L = L_out + α_gs L_grad: α_gs = 0 is the pure output fit
    x, y = batch()
    losses = {}
    for fit, weight in (("output", None), ("gradient", None), ("both", alpha_gs)):
        c = deep(output_activation="linear")
        extra = {} if weight is None else {"alpha_gs": weight}
        rule = layered_rule("vfbn", hidden=(4,), fit=fit, interfaces=["hidden2"], **extra)
        losses[fit] = float(rule.attach(c).step(c, x, y, MSE).extra["module_loss"]["hidden2"])
    assert losses["both"] == pytest.approx(losses["output"] + alpha_gs * losses["gradient"])


def test_vfbn_refuses_a_negative_alpha_gs():
    with pytest.raises(ValueError, match="alpha_gs must be a number >= 0"):
        layered_rule("vfbn", alpha_gs=-1.0)


# -- modules are feedback pathways; recordings and analyses -------------------------------------
def test_modules_are_plastic_feedback_pathways_trained_by_the_same_optimizer():
    c = bp.Circuit.layered([5, 6, 4, 3], activation="relu", seed=0)
    rule = layered_rule("cdni", module="mlp", hidden=(7,)).attach(c)
    sg = c.pathways["sg:hidden1"]
    assert isinstance(sg, SyntheticGradientPathway)
    assert (sg.role, sg.plastic, sg.source, sg.target) == ("feedback", True, "hidden1", "hidden1")
    assert sg.shape == (6, 6) and sg.describe()["conditioned"] == 1
    assert sg.net[0].in_features == 6 + 3  # h ⊕ one-hot label
    ids = {id(p) for p in c.plastic_parameters()}
    assert all(id(p) in ids for p in module_parameters(c))
    opt = make_optimizer(("adam", {"lr": 1e-4, "module_lr": 1e-2}), c, rule)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {"circuit": 1e-4, "module": 1e-2}
    assert len(groups["module"]["params"]) == len(module_parameters(c)) == 2 * 2 * 2
    # without module_lr the modules learn at lr, still in their own group
    opt = make_optimizer(("sgd", {"lr": 0.1}), c, rule)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("circuit", 0.1), ("module", 0.1)]
    assert rule.hyperparameters()["module"] == "mlp"


def test_module_lr_of_a_dni_run_is_in_the_recordings_provenance(tmp_path, tiny_data):
    c = bp.Circuit.layered([8, 6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=2)
    path = tmp_path / "dni.h5"
    bp.train(
        c,
        "dni",
        tiny_data,
        optimizer=("adam", {"lr": 1e-4, "module_lr": 3e-3}),
        epochs=1,
        batch_size=16,
        progress=False,
        record=bp.Record(path, every=2, samples=2),
    )
    tree = bp.load(path)
    try:
        assert tree.attrs["rule"] == "dni" and tree.attrs["rule_kind"] == "layered"
        groups = {g["name"]: g for g in json.loads(tree.attrs["optimizer_groups"])}
        assert groups["module"]["lr"] == 3e-3 and groups["circuit"]["lr"] == 1e-4
        assert groups["module"]["parameters"] == (6 * 6 + 6) + (5 * 5 + 5)  # A, b per module
        assert json.loads(tree.attrs["rule_hyperparameters"])["p_update"] == 1.0
    finally:
        tree.close()


def test_recording_into_an_undeclared_group_names_the_rule(tmp_path, tiny_data):
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", seed=0)
    rule = layered_rule("cdni")
    rule.record_variables = lambda circuit, samples: {}  # declares nothing, records anyway
    with pytest.raises(KeyError, match="rule 'cdni' recorded into 'interfaces/hidden'"):
        bp.train(c, rule, tiny_data, progress=False, record=bp.Record(tmp_path / "x.h5", every=1))


def test_a_module_lr_for_a_rule_without_modules_is_refused(tiny_data):
    c = bp.Circuit.layered([8, 6, 3], seed=0)
    with pytest.raises(ValueError, match=r"\['module_lr'\] name no parameter group of rule 'bp'"):
        bp.train(c, "bp", tiny_data, optimizer=("adam", {"module_lr": 1e-3}), progress=False)


def test_the_one_mlp_builder_draws_hidden_layers_and_zeroes_the_last():
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a, b = mlp([5, 7, 3], g1), mlp([5, 7, 3], g2)
    assert [type(m).__name__ for m in a] == ["Linear", "Act", "Linear"]
    assert torch.equal(a[0].weight, b[0].weight)  # reproducible from the generator
    bound = math.sqrt(6.0 / 5)  # kaiming-uniform, gain √2
    assert 0 < float(a[0].weight.detach().abs().max()) <= bound
    assert torch.count_nonzero(a[2].weight) == 0 and torch.count_nonzero(a[0].bias) == 0
    linear = mlp([4, 4], torch.Generator(), zero_last=False)
    assert len(linear) == 1 and torch.count_nonzero(linear[0].weight) > 0
    with pytest.raises(ValueError, match="sizes must be at least"):
        mlp([4], torch.Generator())
    assert issubclass(SyntheticGradientPathway, ModulePathway)


def test_recording_holds_synthetic_and_true_gradients_and_the_analyses_read_them(
    tmp_path, tiny_data
):
    c = bp.Circuit.layered([8, 6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=2)
    path = tmp_path / "dni.h5"
    lr = 0.05
    bp.train(
        c,
        layered_rule("dni"),
        tiny_data,
        optimizer=("sgd", {"lr": lr}),
        epochs=2,
        batch_size=8,
        progress=False,
        record=bp.Record(path, every=1, samples=4),
    )
    tree = bp.load(path)
    assert analysis_dni.interfaces(tree) == ["hidden1", "hidden2"]
    ds = analysis_dni.interface_signals(tree, "hidden2")
    assert ds["synthetic"].dims == ("step", "sample", "neuron")
    assert ds.sizes["sample"] == 4 and ds.sizes["neuron"] == 5
    # the recorded true ∂ℓ/∂h is the shadow bp's: f'(u) ⊙ true = delta_bp
    pop = tree["populations"]["hidden2"].to_dataset()
    fprime = 1 - pop["rate"] ** 2
    torch.testing.assert_close(
        torch.as_tensor((fprime * ds["true"]).values),
        torch.as_tensor(pop["delta_bp"].values),
        atol=1e-5,
        rtol=1e-4,
    )
    # hidden2 is the top interface: its target is the true gradient on every step
    assert float(analysis_dni.synthetic_angle(tree, "hidden2", which="target").max()) < 1e-2
    summary = analysis_dni.interface_summary(tree)
    assert summary["angle"].dims == ("interface", "step")
    assert bool(summary["relative_error"].isel(step=0).isnull().sum() == 0)
    assert float(summary["relative_error"].isel(step=0).max()) == pytest.approx(1.0)  # ĝ = 0
    # the module's recorded weight is its matrix A; with SGD W[t+1] = W[t] + lr·update[t]
    sg = tree["pathways"]["sg:hidden2"].to_dataset()
    assert sg.attrs["role"] == "feedback" and sg.attrs["interface"] == "hidden2"
    w, upd = sg["weight"].values, sg["weight_update"].values
    assert w.shape[1:] == (5, 5)
    torch.testing.assert_close(
        torch.as_tensor(w[1:]), torch.as_tensor(w[:-1] + lr * upd[:-1]), atol=1e-6, rtol=1e-5
    )
    tree.close()
    with pytest.raises(KeyError, match="no synthetic-gradient interface 'hidden9'"):
        analysis_dni.synthetic_angle(path, "hidden9")


@pytest.mark.parametrize(
    "name, options",
    [
        ("dni", {"module": "linear"}),
        ("cdni", {"module": "mlp", "hidden": (7,)}),
        ("vfbn", {"hidden": (7,), "fit": "gradient"}),
    ],
    ids=["linear", "mlp", "vfbn"],
)
def test_module_weight_update_is_the_change_of_its_effective_weight(name, options):
    # recordings store weight = effective_weight() and weight_update = −weight.grad; a small
    # step θ ← θ − ε·∇θ must change the effective weight by ε·weight_update (first order)
    torch.manual_seed(0)
    c = bp.Circuit.layered([5, 6, 4, 3], activation="tanh", init=bp.init.uniform(0.5)).double()
    rule = layered_rule(name, **options).attach(c)
    module = rule.modules["hidden1"]
    with torch.no_grad():  # move the zero last layer so that every parameter has a gradient
        for p in module.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    rule.step(c, torch.randn(16, 5).double(), torch.rand(16, 3).double(), MSE)
    w0 = module.weight
    update = -w0.grad
    assert float(update.abs().max()) > 0
    eps = 1e-4
    with torch.no_grad():
        for p in module.net.parameters():
            p.sub_(eps * p.grad)
    change = (module.effective_weight() - w0) / eps
    exact = options.get("module") == "linear"
    tol = 1e-9 if exact else 1e-3 * float(update.abs().max())
    torch.testing.assert_close(change, update, atol=tol, rtol=0)


# -- configuration errors ---------------------------------------------------------------------
@pytest.mark.parametrize("p", [-0.1, 1.5, True, float("nan")])
def test_p_update_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError, match=r"p_update must be a probability in \[0, 1\]"):
        layered_rule("dni", p_update=p)


def test_p_update_given_as_a_string_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"p_update='0.5' is a string; pass a number"):
        layered_rule("dni", p_update="0.5")


@pytest.mark.parametrize("name", ["dni", "cdni"])
def test_unknown_module_kind_is_refused(name):
    with pytest.raises(
        ValueError, match="unknown synthetic-gradient module 'conv'; choose one of 'linear', 'mlp'"
    ):
        layered_rule(name, module="conv")


def test_other_bad_configurations_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="unknown VFBN fit 'imitate'; choose one of 'gradient'"):
        layered_rule("vfbn", fit="imitate")
    with pytest.raises(ValueError, match="hidden layer sizes must be positive integers"):
        layered_rule("dni", module="mlp", hidden=(0,))
    with pytest.raises(ValueError, match="interface 'output' is not a hidden population"):
        layered_rule("dni", interfaces=["output"]).attach(deep())
    with pytest.raises(ValueError, match="unknown activation"):
        layered_rule("vfbn", activation="swish")
    with pytest.raises(TypeError, match="call predict"):
        layered_rule("dni").attach(deep()).modules["hidden1"].forward(torch.zeros(1, 7))
