"""README's prose claims, checked against the stored results they were read from.

``tests/test_readme_results.py`` keeps README's tables equal to ``data/results``; the slow
claim tests (``tests/test_claims.py`` and the families' own) re-run each experiment at a
reduced budget.  Here the sentences README builds on those tables — "dni-aux beats bptt at
every T", "no variant rescues kickback", "the two validation curves are the same curve" —
are checked against the stored numbers, so README cannot state what its own data does not
show (a re-run that changes the data fails here until the prose is updated).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest

from bioprop.experiments import report

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _mean(values) -> float:
    return statistics.fmean(v for v in values if math.isfinite(v))


def test_language_model_dni_aux_beats_bptt_at_every_t_and_plain_dni_only_ties_it():
    # README (Jaderberg et al. Table 1): dni-aux below bptt at every T; plain dni within a
    # few hundredths of bptt (ties); longer truncation helps bptt and dni-aux
    bpc = _json("dni_language.json")["test_bpc"]
    ts = sorted({int(k.split("T=")[1]) for k in bpc})
    assert ts == [2, 3, 4, 5, 8]
    for t in ts:
        assert bpc[f"dni-aux T={t}"] < bpc[f"bptt T={t}"], t
        assert abs(bpc[f"dni T={t}"] - bpc[f"bptt T={t}"]) < 0.06, t
    for rule in ("bptt", "dni-aux"):
        assert bpc[f"{rule} T=8"] < bpc[f"{rule} T=2"] - 0.05, rule


def test_no_kickback_variant_comes_within_the_1_5x_of_the_10_epoch_budget():
    # README: at 4x the budget the ratio grows to ~1.8; random-sign init, relu units, Adam,
    # per-torque networks and forced coherence are all further behind bp
    ratios = {}
    for label, name in report.KICKBACK_VARIANTS:
        res, _ = report._kickback_results(RESULTS.parents[1], name)
        ratios[label] = _mean(res["kickback"]["test_nmse"]) / _mean(res["bp"]["test_nmse"])
    base = [r for label, r in ratios.items() if label == "as above"]
    others = [r for label, r in ratios.items() if not label == "as above"]
    assert base and base[0] <= 1.5
    assert others and min(others) > 1.5, ratios


def test_dp_fa_learns_pattern_memorisation_as_well_as_dp_bptt():
    # README (Miconi et al. §4.1): the plastic RNN below 5 % sign error with BPTT and with
    # dp-fa alike; the non-plastic RNN and the LSTM at chance
    models = _json("plasticity_patterns.json")["models"]
    err = {m: _mean(v["test_sign_error"]) for m, v in models.items()}
    assert err["plastic"] < 0.05 and err["dp-fa"] < 0.05
    assert abs(err["dp-fa"] - err["plastic"]) < 0.01
    assert err["rnn"] > 0.45 and err["lstm"] > 0.45
    # ... below 5 % within ~136 episodes; the trace within 10.7-11.8° of the Hopfield
    # matrix; dp-fa in ~3.5x less wall time
    assert _mean(models["plastic"]["episodes_to_5pct"]) < 150
    angles = models["plastic"]["angle_to_sum"]
    assert 10.5 < min(angles) and max(angles) < 12
    assert _mean(models["plastic"]["wall_s"]) > 3 * _mean(models["dp-fa"]["wall_s"])


def test_paper_setup_fa_and_sign_symmetry_match_the_tuned_bp_and_share_its_validation_curve():
    # README (Lillicrap Fig. 2a, paper setup): with every rule's setting chosen on
    # validation fa and sign symmetry are within 1 point of bp (test) and shallow far
    # behind; fa's validation error at feedback scale ω tracks bp's at hidden rate ω
    scale = _json("lillicrap_mnist_paper_feedback_scale.json")
    hidden = _json("lillicrap_mnist_paper_hidden_lr.json")
    test = {r: 100 * _mean(v) for r, v in scale["test_error"].items()}
    bp = 100 * _mean(hidden["test_error"]["bp"])
    assert abs(test["fa"] - bp) < 1 and abs(test["sign-symmetry"] - bp) < 1
    assert test["shallow"] - test["fa"] > 5
    assert test["bp"] - test["fa"] > 1.5  # fa "better" than an untuned bp
    fa_val, bp_val = scale["validation_error"]["fa"], hidden["validation_error"]["bp"]
    for v in ("0.5", "1", "2"):
        assert abs(fa_val[v] - bp_val[v]) < 0.005, v
    assert scale["chosen"] == {"fa": 2.0, "sign-symmetry": 2.0} and hidden["chosen"] == {"bp": 4.0}


def test_at_60_epochs_with_early_stopping_fa_still_matches_bp_and_nothing_has_converged():
    # README (paper setup, epochs chosen on validation): fa 10.46, sign symmetry 10.53, bp
    # 10.58, shallow 17.65 %; every rule 0.9-1.5 points better than at 30 epochs; chosen
    # epochs 53-60; fa/sign symmetry at the grid's edge (ω = 8), bp's rate 4 inside its grid;
    # fa at ω and bp at rate ω within 0.3 points on validation
    scale = _json("lillicrap_mnist_paper_feedback_scale_early_stopping.json")
    hidden = _json("lillicrap_mnist_paper_hidden_lr_early_stopping.json")
    test = {r: 100 * _mean(v) for r, v in scale["test_error"].items()}
    test["bp"] = 100 * _mean(hidden["test_error"]["bp"])
    assert abs(test["fa"] - test["bp"]) < 0.5 and abs(test["sign-symmetry"] - test["bp"]) < 0.5
    assert test["shallow"] - test["fa"] > 5
    before = {
        r: 100 * _mean(v)
        for r, v in _json("lillicrap_mnist_paper_feedback_scale.json")["test_error"].items()
    }
    before["bp"] = 100 * _mean(_json("lillicrap_mnist_paper_hidden_lr.json")["test_error"]["bp"])
    for r, e in test.items():
        assert 0.9 <= before[r] - e <= 1.5, r
    epochs = scale["epochs_chosen"] | hidden["epochs_chosen"]
    assert scale["epochs"] == hidden["epochs"] == 60
    assert min(epochs.values()) >= 53
    assert scale["chosen"] == {"fa": 8.0, "sign-symmetry": 8.0} and hidden["chosen"] == {"bp": 4.0}
    fa_val, bp_val = scale["validation_error"]["fa"], hidden["validation_error"]["bp"]
    assert max(abs(fa_val[v] - bp_val[v]) for v in ("2", "4", "8")) < 0.003


def test_the_strong_setup_trained_longer_puts_fa_just_outside_a_point_of_bp():
    # README (strong setup, 40 epochs, epochs chosen on validation): bp 9.99 % (10.50 at
    # 20 epochs) gains most; fa +1.04 points (the claim does not hold), sign symmetry
    # +0.79, shallow 13.62 %; bp and fa choose 3e-4, the others 1e-3; chosen epochs 33-39
    d = _json("lillicrap_mnist_strong_early_stopping.json")
    before = _json("lillicrap_mnist_strong.json")
    test = {r: 100 * _mean(v) for r, v in d["test_error"].items()}
    gain = {r: 100 * _mean(before["test_error"][r]) - e for r, e in test.items()}
    assert max(gain, key=gain.get) == "bp"
    assert 1.0 < test["fa"] - test["bp"] < 1.1
    assert 0 < test["sign-symmetry"] - test["bp"] < 1
    assert test["shallow"] - test["fa"] > 2.5
    assert d["chosen"] == {"bp": 3e-4, "fa": 3e-4, "sign-symmetry": 1e-3, "shallow": 1e-3}
    assert sorted(d["epochs_chosen"].values()) == [33, 35, 39, 39] and d["epochs"] == 40
    assert any("DOES NOT HOLD" in c and "fa matches bp" in c for c in d["claims"])


def test_symmetric_ep_beats_one_sided_ep_and_both_beat_the_linear_output_bp_twin():
    # README (ep_mnist.py, 8 epochs): ep-sym 11.97 %, ep 13.07 %, bp-lin 14.28 %
    text = (RESULTS / "ep_mnist.txt").read_text()
    err = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^\s+(\S+)\s+seed 0: test error ([\d.]+) %", text, re.M)
    }
    assert err["ep-sym"] < err["ep"] < err["bp-lin"] < err["bp"]


def test_the_spiking_circuit_chose_the_longer_presentation_at_every_eta():
    # README (spiking FA): 100 ms presentations beat 50 ms at every η on validation
    text = (RESULTS / "spiking_feedback_alignment_select.txt").read_text()
    acc = {
        (float(m.group(1)), float(m.group(2))): float(m.group(3))
        for m in re.finditer(r"η ([\d.]+) Hz, ([\d.]+) ms: .*\(mean ([\d.]+) %\)", text)
    }
    etas = sorted({e for e, _ in acc})
    assert etas == [4.0, 8.0, 16.0]
    assert all(acc[(e, 100.0)] > acc[(e, 50.0)] for e in etas)
    assert "chosen on validation: η 16 Hz, 100 ms per sample" in text


@pytest.mark.parametrize("name", ["sweep_ep_rate_scale.json"])
def test_eps_half_rates_were_chosen_on_validation_not_test(name):
    # README / docs/ep.md: the compare image task's EP rates (half of S&B's) won on a
    # validation split at the task's budget
    d = _json(name)
    assert d["evaluated_on"].startswith("validation")
    err = {c["optimizer.input->hidden_lr"]: c["test_error"]["mean"] for c in d["cells"]}
    assert err[0.1] < err[0.2]


def _stored_verdicts(name: str) -> list[tuple[str, str]]:
    """The claims a script printed into a stored output, with their verdicts."""
    text = (RESULTS / name).read_text()
    found = re.findall(r"^- (.+?)\n(?:.*\n)*?  -> (.+)$", text, re.M)
    assert found, name
    return [(c, v.strip()) for c, v in found]


def _verdict(found: list[tuple[str, str]], part: str) -> list[str]:
    hits = [v for c, v in found if part in c]
    assert hits, part
    return hits


def test_copy_and_repeat_copy_verdicts_are_the_ones_readme_reports():
    # README: copy reproduced for dni and dni-aux (dni/dni-aux reach N 2 / 3 where bptt
    # stays at 1 at T = 3, 4 in every seed); repeat copy holds for dni, not for dni-aux
    text = (RESULTS / "dni_copy_long.txt").read_text()
    n = {
        (m.group(1), int(m.group(2)), int(m.group(3))): int(m.group(4))
        for m in re.finditer(r"copy\s+(\S+)\s+T=(\d) seed (\d): max N (\d+)", text)
    }
    for t in (3, 4):
        for s in range(3):
            assert min(n[("dni", t, s)], n[("dni-aux", t, s)]) > n[("bptt", t, s)], (t, s)
    assert {v for (r, t, s), v in n.items() if t == 2} == {1}
    copy = _stored_verdicts("dni_copy_long.txt")
    assert _verdict(copy, "dni reaches longer") == ["HOLDS"]
    assert _verdict(copy, "dni-aux reaches longer") == ["HOLDS"]
    repeat = _stored_verdicts("repeat_copy_long.txt")
    assert _verdict(repeat, ", dni reaches longer") == ["HOLDS"]
    assert _verdict(repeat, "dni-aux reaches longer") == ["DOES NOT HOLD"]


def test_vfbn_verdicts_are_the_ones_readme_reports():
    # README: closer-than-DNI and DNI-behind-bp hold; beating the bottom half / local head
    # and α_gs = 1e-3 beating α_gs = 0 do not resolve; their objective is worse but close
    found = _stored_verdicts("vfbn.txt")
    assert set(_verdict(found, "closer to the true gradient than DNI's")) == {"HOLDS"}
    assert _verdict(found, "DNI (Jaderberg et al.'s model) falls behind backprop") == ["HOLDS"]
    assert set(_verdict(found, "beats the bottom half alone")) == {"DOES NOT HOLD"}
    assert _verdict(found, "α_gs = 1e-3 beats α_gs = 0") == ["DOES NOT HOLD"]
    close = [v for c, v in found if "worse than backprop" in c and "α_gs = 1e-3" in c]
    assert close == ["HOLDS"]


def test_target_propagation_verdicts_are_the_ones_readme_reports():
    # README: Bartunov's order bp ≤ dtp-alternating ≤ dtp-parallel does not hold; both dtp
    # schedules within 2.5 points of bp; Gauss-Newton closer than bp early on for
    # dtp-alternating but not for dtp (parallel); Meulemans: the same holds for dtp-drl and
    # ddtp-linear, not for dtp; Lee: dtp beats tp, comes close to bp
    def verdicts(name):
        return [(c.splitlines()[0], c.strip().splitlines()[-1]) for c in _json(name)["claims"]]

    def of(found, part):
        return [v.strip().removeprefix("-> ") for c, v in found if part in c]

    bart = verdicts("bartunov_fc.json")
    assert of(bart, "bp ≤ dtp-alternating ≤ dtp-parallel") == ["DOES NOT HOLD"]
    assert set(of(bart, "within 2.5 percentage points of bp")) == {"HOLDS"}
    assert of(bart, "dtp: closer to") == ["DOES NOT HOLD"]
    assert of(bart, "dtp-alternating: closer to") == ["HOLDS"]
    meul = verdicts("dtp_meulemans.json")
    assert of(meul, "dtp: closer to") == ["DOES NOT HOLD"]
    assert of(meul, "dtp-drl: closer to") == of(meul, "ddtp-linear: closer to") == ["HOLDS"]
    assert of(meul, "difference reconstruction loss helps") == ["HOLDS"]
    lee = verdicts("dtp_lee.json")
    assert set(of(lee, "")) == {"HOLDS"} and len(lee) == 4


def test_fa_sweep_b_scale_works_like_a_hidden_learning_rate():
    # README (sweeps): at lr 0.0025 fa's NSE falls as ω grows; the largest lr that still
    # converges falls with ω (0.02 up to ω = 0.1, 0.01 up to 0.5, 0.005 at 1; bp diverges at
    # 0.02); fa's angle to bp stays between 25° and 34° in every cell
    cells = _json("sweep_fa_scale_lr.json")["cells"]
    fa = {
        (float(c["fa.feedback_init"][8:-1]), c["optimizer.lr"]): c
        for c in cells
        if c["rule"] == "fa"
    }
    scales = sorted({w for w, _ in fa})
    slow = [fa[(w, 0.0025)]["final_loss"]["mean"] for w in scales]
    assert slow == sorted(slow, reverse=True)
    for w in scales:
        fine = [lr for (v, lr), c in fa.items() if v == w and not c["failed"]]
        assert max(fine) == (0.02 if w <= 0.1 else 0.01 if w <= 0.5 else 0.005), w
    bp = {c["optimizer.lr"]: c for c in cells if c["rule"] == "bp"}
    assert bp[0.02]["failed"] == 3 and not bp[0.01]["failed"]
    angles = [c["angle_to_bp"]["mean"] for c in fa.values() if not c["failed"]]
    assert 24.5 < min(angles) and max(angles) < 34


def _bench_runs(name: str) -> list[dict[str, float]]:
    """Each run's ``{key: median ratio}`` of a stored ``bioprop bench`` table."""
    runs: list[dict[str, float]] = []
    for line in (RESULTS / name).read_text().splitlines():
        if line.startswith("## run"):
            runs.append({})
        elif runs and re.match(r"^[a-z_0-9]+\s+-?\d", line):
            key, ratio = line.split()[:2]
            runs[-1][key] = float(ratio)
    return runs


def test_speed_targets_missed_sit_at_their_measured_floors():
    # README (Speed): fa_over_bp_b128 and recording_overhead miss their targets but sit at
    # the floors measured beside them, which themselves miss the targets (no trainer or
    # recorder could meet them here); the targets README calls met in both runs are
    runs = _bench_runs("bench_speed.txt")
    assert len(runs) == 2
    for r in runs:
        assert r["handloop_over_bp_b128"] > 0.8 and r["recording_bytes_floor"] > 1.03
        assert r["fa_over_bp_b128"] - r["handloop_over_bp_b128"] < 0.06
        assert r["recording_overhead"] - r["recording_bytes_floor"] < 0.08
        assert r["fa_over_handloop"] <= 1.1 and r["gflops_fraction_b128"] >= 0.5
        assert r["rnn_bptt_over_torch_lstm"] <= 1.3 and r["dni_over_bptt_update"] <= 1.5
        assert r["recording_rss_growth_mb"] <= 20
    # ... and those met in one run only
    assert min(r["fa_over_bp_b32"] for r in runs) <= 0.8 < max(r["fa_over_bp_b32"] for r in runs)
    assert min(r["gflops_fraction"] for r in runs) < 0.35 <= max(r["gflops_fraction"] for r in runs)


def _max_n(name: str) -> dict[tuple[str, int, int], int]:
    """``{(rule, T, seed): max N}`` from a stored ``dni_copy.py`` output."""
    text = (RESULTS / name).read_text()
    return {
        (m.group(1), int(m.group(2)), int(m.group(3))): int(m.group(4))
        for m in re.finditer(r"copy\s+(\S+)\s+T=(\d) seed (\d): max N (\d+)", text)
    }


def test_the_wider_lstm_helps_copy_only_at_the_longest_window_and_not_repeat_copy():
    # README (256-unit LSTM): copy holds; at T = 5 dni and dni-aux reach N = 4 in both seeds
    # (2.67 with 64 units), bptt stays at 2; T = 2-4 read as with 64 units; repeat copy does
    # not hold at 256 units, where dni reached 2 at T = 4, 5 with 64
    wide, narrow = _max_n("dni_copy_256.txt"), _max_n("dni_copy_long.txt")
    assert sorted({s for (_, _, s) in wide}) == [0, 1]
    for rule in ("dni", "dni-aux"):
        assert [wide[(rule, 5, s)] for s in (0, 1)] == [4, 4]
        assert _mean(narrow[(rule, 5, s)] for s in range(3)) < 3
    assert [wide[("bptt", 5, s)] for s in (0, 1)] == [2, 2]
    for t in (2, 3, 4):
        for rule in ("bptt", "dni", "dni-aux"):
            assert {wide[(rule, t, s)] for s in (0, 1)} == {narrow[(rule, t, 0)]}, (rule, t)
    assert [v for _, v in _stored_verdicts("dni_copy_256.txt")] == ["HOLDS", "HOLDS"]
    assert [v for _, v in _stored_verdicts("repeat_copy_256.txt")] == ["DOES NOT HOLD"] * 2
    rep64, rep256 = _max_n("repeat_copy_long.txt"), _max_n("repeat_copy_256.txt")
    assert [rep64[("dni", t, 0)] for t in (4, 5)] == [2, 2]
    assert [rep256[(r, t, 0)] for r in ("dni", "dni-aux") for t in (3, 4, 5)] == [1] * 6
    assert [rep256[("bptt", t, 0)] for t in (2, 4, 5)] == [1, 1, 1]
