"""Locality of target propagation: a layer's forward update reads only its input, output and
target; an inverse's update reads only its layer's activity, its noise and its own weights."""

import copy
import math

import pytest
import torch
from conftest import labelled_batch, tanh_to_linear_circuit

import bioprop as bp

CE = bp.losses.get("cross-entropy")


def _nan_(t):
    t.data.fill_(math.nan)


@pytest.mark.parametrize("rule", ["tp", "dtp", "dtp-drl", "ddtp-linear"])
def test_a_layers_forward_update_reads_only_its_input_output_and_target(rule):
    c = tanh_to_linear_circuit()
    r = bp.rules.get(rule).attach(c)
    x, y = labelled_batch(10, 3)
    state = r.forward(c, x)
    targets, e = r.targets(c, state, y, CE)
    bp.rules.write_pathway_grads(c, state, r.forward_deltas(c, state, targets, e))
    want = {pw.name: pw.weight.grad.clone() for pw in c.feedforward_pathways()}
    for pw in c.feedforward_pathways():
        if pw.target not in targets:
            continue
        probe = copy.deepcopy(c)
        for other in probe.pathways.values():  # every weight, forward and feedback
            for p in other.own_parameters():
                _nan_(p)
        keep = {pw.source, pw.target}  # its input h_{l−1} and output u_l, h_l
        s = bp.SweepState(
            {k: v if k in keep else torch.full_like(v, math.nan) for k, v in state.u.items()},
            {k: v if k in keep else torch.full_like(v, math.nan) for k, v in state.r.items()},
        )
        only = {pw.target: targets[pw.target]}  # and its own target
        bp.rules.write_pathway_grads(probe, s, r.forward_deltas(probe, s, only))
        assert torch.equal(probe.pathways[pw.name].weight.grad, want[pw.name]), pw.name


def test_the_forward_locality_probe_sees_weights_read_before_the_targets():
    c = tanh_to_linear_circuit()
    r = bp.rules.get("dtp").attach(c)
    x, y = labelled_batch(10, 3)
    state = r.forward(c, x)
    _nan_(c.pathways["hidden3->hidden2"].weight)  # an inverse, before targets are computed
    targets, _ = r.targets(c, state, y, CE)
    assert torch.isnan(targets["hidden1"]).all()


@pytest.mark.parametrize("rule", ["tp", "dtp"])
def test_an_inverse_update_reads_only_its_layers_activity_its_noise_and_its_own_weights(rule):
    c = tanh_to_linear_circuit()
    r = bp.rules.get(rule).attach(c)
    x, _ = labelled_batch(10, 3)
    state = r.forward(c, x)
    g0 = r.generator.get_state()
    r.write_inverse_grads(c, state)
    for pop, g in r.inverses.items():
        f = c.incoming(pop)[0]  # g_l inverts f_l: h_{l−1} → h_l
        want = g.weight.grad.clone()
        probe = copy.deepcopy(c)
        pr = copy.copy(r)
        pr.inverses = {p: probe.pathways[q.name] for p, q in r.inverses.items()}
        for other in probe.pathways.values():
            if other.name not in (f.name, g.name):
                for p in other.own_parameters():
                    _nan_(p)
        s = bp.SweepState(
            {k: torch.full_like(v, math.nan) for k, v in state.u.items()},
            {k: v if k == g.target else torch.full_like(v, math.nan) for k, v in state.r.items()},
        )
        pr.generator = torch.Generator()
        pr.generator.set_state(g0)
        pr.write_inverse_grads(probe, s)
        assert torch.equal(probe.pathways[g.name].weight.grad, want), g.name
        # the probe can fail: the layer's own forward weights are read
        _nan_(probe.pathways[f.name].weight)
        pr.generator.set_state(g0)
        pr.write_inverse_grads(probe, s)
        assert torch.isnan(probe.pathways[g.name].weight.grad).all()
