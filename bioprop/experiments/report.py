"""README's result blocks, regenerated from the files the experiments stored under data/.

A block in README is everything between a header comment and ``<!-- /results -->``::

    <!-- results: kickback -->
    | rule | lr | test NMSE | ÷ bp | paper |
    ...
    <!-- /results -->

The header names either a **table** rendered here from a results file (:data:`TABLES`:
``kickback``, ``dni_language``, …) or a **stored text** — a file under ``data/results``
that a command wrote with ``| tee`` — shown in a code fence, whole or the lines from the
first one starting with ``from`` up to (not including) the next one starting with ``to``::

    <!-- results: dni_mnist.txt from="layers  bp" to="paper (" -->

``bioprop report`` rewrites every block of README from ``data/``; ``bioprop report --check``
exits with status 1 and a diff when README differs (the test suite runs it), so README's
tables cannot drift from what the commands stored.
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import math
import re
import shlex
import statistics
from collections.abc import Callable
from pathlib import Path

__all__ = ["TABLES", "render", "blocks", "regenerate", "check"]

BEGIN = re.compile(r"^<!-- results: (?P<spec>.+?) -->$")
END = "<!-- /results -->"


# -- helpers -----------------------------------------------------------------------------------
def _json(root: Path, name: str) -> dict:
    return json.loads((root / "data" / "results" / name).read_text())


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(headers, rows) -> str:
    return "\n".join([_row(headers), _row(["---"] * len(headers)), *(_row(r) for r in rows)])


def _mean_sd(values, scale: float = 1.0, fmt: str = ".3g", unit: str = "") -> str:
    vals = [scale * v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:{fmt}}{unit}"
    return f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}{unit}"


def _paper(root: Path, csv_name: str, quantity: str) -> list[str]:
    """The ' / '-separated values of the row of ``data/papers/<csv_name>`` whose quantity
    starts with ``quantity``."""
    with open(root / "data" / "papers" / csv_name, newline="") as f:
        for row in csv.DictReader(f):
            if row["quantity"].startswith(quantity):
                return [v.strip() for v in row["value"].split("/")]
    raise KeyError(f"data/papers/{csv_name} has no quantity starting with {quantity!r}")


# -- tables ------------------------------------------------------------------------------------
def dni_language(root: Path) -> str:
    """Test BPC per (rule, T), ours [paper, PTB], from ``dni_language.json``."""
    d = _json(root, "dni_language.json")
    Ts = sorted({c["T"] for c in d["cells"]})
    rules = list(dict.fromkeys(c["rule"] for c in d["cells"]))
    paper_T = [2, 3, 4, 5, 8]
    paper = {
        "bptt": _paper(root, "jaderberg2017_ptb.csv", "BPTT"),
        "dni": _paper(root, "jaderberg2017_ptb.csv", "DNI bits"),
        "dni-aux": _paper(root, "jaderberg2017_ptb.csv", "DNI + Aux"),
    }
    rows = []
    for r in rules:
        row = [r, f"{d['selection']['chosen'].get(r, '—'):g}"]
        for T in Ts:
            v = [c["bpc"] for c in d["cells"] if (c["rule"], c["T"]) == (r, T)]
            p = f" [{paper[r][paper_T.index(T)]}]" if T in paper_T and r in paper else ""
            row.append(_mean_sd(v, fmt=".3f") + p)
        rows.append(row)
    return _table(["rule", "lr (chosen on validation)"] + [f"T = {T}" for T in Ts], rows)


def dni_language_selection(root: Path) -> str:
    """Validation BPC of every learning rate tried, from ``dni_language.json``."""
    sel = _json(root, "dni_language.json")["selection"]
    lrs = sorted({c["lr"] for c in sel["cells"]})
    rules = list(dict.fromkeys(c["rule"] for c in sel["cells"]))
    rows = []
    for r in rules:
        row = [r]
        for lr in lrs:
            v = [c["bpc"] for c in sel["cells"] if (c["rule"], c["lr"]) == (r, lr)]
            best = lr == sel["chosen"].get(r)
            cell = _mean_sd(v, fmt=".3f")
            row.append(f"**{cell}**" if best else cell)
        rows.append(row)
    return _table(["rule"] + [f"lr {lr:g}" for lr in lrs], rows)


def _kickback_results(root: Path, name: str) -> tuple[dict, dict]:
    d = _json(root, name)
    return d["results"]["planar-arm"], d.get("kickback_coherence", {}).get("planar-arm", {})


def kickback(root: Path) -> str:
    """Test NMSE per rule on the planar arm, from ``kickback_regression.json``."""
    res, _ = _kickback_results(root, "kickback_regression.json")
    paper = {"bp": "reference", "kickback": "matches bp"}
    bp = statistics.fmean(res["bp"]["test_nmse"])
    rows = []
    for rule, r in res.items():
        lr = ", ".join(f"{v:g}" for v in r["lr"].values())
        mean = statistics.fmean(r["test_nmse"])
        name = f"**{rule}**" if rule == "kickback" else rule
        nmse = _mean_sd(r["test_nmse"])
        rows.append(
            [
                name,
                lr,
                f"**{nmse}**" if rule == "kickback" else nmse,
                f"{mean / bp:.3g}",
                paper.get(rule, "—"),
            ]
        )
    return _table(["rule", "lr", "test NMSE", "÷ bp", "paper (SARCOS, Barrett WAM)"], rows)


#: (label, results file) of the kickback variants table
KICKBACK_VARIANTS = (
    ("as above", "kickback_regression.json"),
    ("random-sign initial weights", "kickback_regression_random_init.json"),
    ("no negative units", "kickback_regression_relu.json"),
    ("Adam, lr from 3e-4 / 1e-3 / 3e-3", "kickback_regression_adam.json"),
    ("one 1-output network per torque", "kickback_regression_per_torque.json"),
    ("4× the budget, lr re-chosen on validation", "kickback_regression_40epochs.json"),
    ("4× the budget, synapses clipped at zero", "kickback_regression_40epochs_keep_coherent.json"),
)


def kickback_variants(root: Path) -> str:
    """bp and kickback test NMSE, ratio and coherent fraction per variant."""
    rows = []
    for label, name in KICKBACK_VARIANTS:
        res, coh = _kickback_results(root, name)
        bp = statistics.fmean(v for v in res["bp"]["test_nmse"] if math.isfinite(v))
        kb = statistics.fmean(v for v in res["kickback"]["test_nmse"] if math.isfinite(v))
        frac = coh.get("coherent_fraction", math.nan)
        words = shlex.split(_json(root, name)["command"])[2:]
        args = [w for k, w in enumerate(words) if "--out" not in (w, words[k - 1] if k else "")]
        shown = f"`{' '.join(args)}`" if args else "(none)"
        rows.append(
            [label, shown, f"{bp:.3g}", f"{kb:.3g}", f"{kb / bp:.3g}", f"{100 * frac:.0f} %"]
        )
    head = ["variant", "arguments of kickback_regression.py", "bp", "kickback", "÷ bp"]
    return _table(head + ["coherent"], rows)


def bartunov_dtp(root: Path) -> str:
    """bp / dtp / dtp-alternating test error, from ``bartunov_fc.json``."""
    d = _json(root, "bartunov_fc.json")
    paper = {"bp": "1.48 %", "dtp": "2.86 %", "dtp-alternating": "1.83 %"}
    label = {"bp": "bp", "dtp": "dtp, parallel", "dtp-alternating": "dtp, alternating"}
    per_seed = d.get("per_seed", {})
    rows = []
    for rule, err in d["test_error"].items():
        values = per_seed.get(rule)
        shown = _mean_sd(values, 100, ".2f", " %") if values else f"{100 * err:.2f} %"
        rows.append([label.get(rule, rule), paper.get(rule, "—"), shown])
    epochs = d["forward_epochs"]
    return _table(
        ["rule", "paper, MNIST (Bartunov Table 1)", f"ours, Fashion-MNIST, {epochs} epochs"], rows
    )


def _first_epoch_angles(d: dict, rule: str) -> str:
    """Mean over layers of ∠ to bp / to the damped Gauss–Newton update, first forward epoch."""
    layers = d.get("angles", {}).get(rule)
    if not layers:
        return "—"
    bp = statistics.fmean(v["bp_first_forward_epoch"] for v in layers.values())
    gn = statistics.fmean(v["gauss_newton_damped_first_forward_epoch"] for v in layers.values())
    return f"{bp:.0f}° / {gn:.0f}°"


def _tp_table(
    root: Path, name: str, paper: dict[str, str] | None, labels: dict, angles: bool = False
) -> str:
    d = _json(root, name)
    rows = []
    for rule, v in d["variants"].items():
        errs = [s["test_error"] for s in v["per_seed"]]
        row = [labels.get(rule, rule)]
        if paper is not None:
            row.append(paper.get(rule, "—"))
        finite = [e for e in errs if math.isfinite(e)]
        shown = _mean_sd(errs, 100, ".2f", " %")
        if len(finite) < len(errs):
            shown += f" ({len(errs) - len(finite)} of {len(errs)} seeds diverged)"
        row.append(shown)
        if angles:
            row.append(_first_epoch_angles(d, rule))
        rows.append(row)
    epochs = d["forward_epochs"]
    head = ["rule"] + (["paper, MNIST (Lee Table 1)"] if paper is not None else [])
    head.append(f"ours, Fashion-MNIST, {epochs} epochs")
    if angles:
        head.append("∠ to bp / to damped GN, first forward epoch (mean over layers)")
    return _table(head, rows)


def dtp_lee(root: Path) -> str:
    """bp / fa / tp / dtp test error, from ``dtp_lee.json``."""
    paper = {"bp": "not retrieved", "tp": "not retrieved", "dtp": "not retrieved"}
    labels = {"tp": "tp (no difference correction)"}
    return _tp_table(root, "dtp_lee.json", paper, labels)


def dtp_meulemans(root: Path) -> str:
    """bp / dtp / dtp-drl / ddtp-linear test error, from ``dtp_meulemans.json``."""
    return _tp_table(root, "dtp_meulemans.json", None, {}, angles=True)


PLASTICITY_LABELS = {
    "plastic": "plastic RNN, {units} units (`dp-bptt`)",
    "rnn": "RNN with α fixed at 0, {units} units",
    "lstm": "LSTM, {units} units + read-out",
    "dp-fa": "plastic RNN, no BPTT (`dp-fa`)",
}


def plasticity_patterns(root: Path) -> str:
    """Held-out sign error per network, from ``plasticity_patterns[_long].json``."""
    models = _json(root, "plasticity_patterns.json")["models"]
    long = _json(root, "plasticity_patterns_long.json")["models"]
    paper = {"plastic": "solves it", "rnn": "fails", "lstm": "fails"}
    rows = []
    for name, m in models.items():
        err = _mean_sd(m["test_sign_error"], 100, ".1f", " %")
        if name in long:
            err += f" ({100 * statistics.fmean(long[name]['test_sign_error']):.1f} % after "
            err += f"{long[name]['episodes'][0]} episodes)"
        fin = [e for e in m["episodes_to_5pct"] if e is not None and math.isfinite(e)]
        reach = _mean_sd(fin, fmt=".0f") if len(fin) == len(m["episodes_to_5pct"]) else "never"
        label = PLASTICITY_LABELS.get(name, name).format(units=m["units"])
        bold = name in ("plastic", "dp-fa")
        rows.append(
            [
                label,
                f"{m['parameters']:,}",
                f"**{err}**" if bold else err,
                reach,
                paper.get(name, "—"),
            ]
        )
    head = ["network", "parameters", "held-out sign error"]
    head += ["episodes to < 5 % (training, mean of 20)", "paper"]
    return _table(head, rows)


def plasticity_images(root: Path) -> str:
    """Squared error per erased pixel, stored and novel image, from
    ``plasticity_images.json``."""
    d = _json(root, "plasticity_images.json")
    paper = {"plastic": "reconstructs", "rnn": "fails", "lstm": "fails"}
    rows = []
    for name, m in d["models"].items():
        stored = _mean_sd(m["test_mse_erased"], fmt=".3f")
        bold = name in ("plastic", "dp-fa")
        rows.append(
            [
                PLASTICITY_LABELS.get(name, name).format(units=m["units"]),
                f"{m['parameters']:,}",
                f"**{stored}**" if bold else stored,
                _mean_sd(m["novel_test_mse_erased"], fmt=".3f"),
                paper.get(name, "—"),
            ]
        )
    rows.append(["zero fill (output 0)", "—", f"{d['zero_fill']:.3f}", "—", "—"])
    return _table(["network", "parameters", "stored image", "novel image", "paper"], rows)


def _lillicrap_selection(root: Path, name: str) -> str:
    """Each rule's validation error per candidate setting (seed 0; the chosen one in bold)
    and its test error at the chosen setting, from ``name`` (written by
    ``circuits/lillicrap_mnist.py --select-…``); rules the setting does not apply to show
    their test error only.  Where the epoch count was chosen too (``--select-epochs``), a
    validation cell gives its best epoch in brackets, and a column each rule's chosen count
    (with the validation error of a rule that chose nothing else)."""
    d = _json(root, name)
    setting = d.get("setting", "Adam lr")  # the first stored file chose Adam rates only
    chosen = d.get("chosen", d.get("chosen_lr", {}))
    values = sorted({float(v) for errs in d["validation_error"].values() for v in errs})
    paper = {"bp": "2.4 %", "fa": "2.1 %", "shallow": "7.2 %"}
    short = "lr" if "lr" in setting else "ω"
    by_epoch = "epochs_chosen" in d
    rows = []
    for rule, errs in d["test_error"].items():
        val = d["validation_error"].get(rule, {})
        cells = []
        for v in values:
            e = val.get(f"{v:g}")
            cell = f"{100 * e:.2f}" if e is not None else "—"
            if e is not None and by_epoch:
                cell += f" ({d['validation_epoch'][rule][f'{v:g}']})"
            cells.append(f"**{cell}**" if rule in chosen and v == chosen[rule] else cell)
        test = _mean_sd(errs, 100, ".2f", " %")
        if by_epoch:
            n = str(d["epochs_chosen"][rule])
            own = d.get("validation_error_own_setting", {}).get(rule)
            cells.append(n if own is None else f"{n} (validation {100 * own:.2f} %)")
        rows.append([rule, *cells, test, paper.get(rule, "—")])
    head = ["rule", *(f"validation % at {short} {v:g}" for v in values)]
    if by_epoch:
        head += [f"epochs (of {d['epochs']})"]
        head += [f"test, {len(d['seeds'])} seeds, chosen epochs", "paper, MNIST"]
    else:
        head += [f"test, {len(d['seeds'])} seeds, {d['epochs']} epochs", "paper, MNIST"]
    return _table(head, rows)


#: README table name -> the ``circuits/lillicrap_mnist.py --select-…`` results file it renders
LILLICRAP_SELECTIONS = {
    "lillicrap_strong": "lillicrap_mnist_strong.json",  # Adam rates, the strong setup
    "lillicrap_paper": "lillicrap_mnist_paper_feedback_scale.json",  # fa/sign-symmetry ω
    "lillicrap_paper_bp": "lillicrap_mnist_paper_hidden_lr.json",  # bp's hidden-layer rate
    # the same with each rule's epoch count chosen too (--select-epochs)
    "lillicrap_strong_early_stopping": "lillicrap_mnist_strong_early_stopping.json",
    "lillicrap_paper_early_stopping": "lillicrap_mnist_paper_feedback_scale_early_stopping.json",
    "lillicrap_paper_bp_early_stopping": "lillicrap_mnist_paper_hidden_lr_early_stopping.json",
}


def _short(v: float) -> str:
    """1.3e-07 → 1.3e-7 (the exponent without padding)."""
    mant, _, exp = f"{v:.1e}".partition("e")
    return f"{mant}e{int(exp)}"


def sweep_fa_scale_lr(root: Path) -> str:
    """Mean validation NSE per (rule, feedback scale) × learning rate of the fa sweep, from
    ``sweep_fa_scale_lr.json`` (``div.``: every seed diverged)."""
    d = _json(root, "sweep_fa_scale_lr.json")
    lrs = sorted({c["optimizer.lr"] for c in d["cells"]})
    rows: dict[str, dict[float, str]] = {}
    for c in d["cells"]:
        scale = c.get("fa.feedback_init", "")
        label = c["rule"] if not scale else f"{c['rule']}, ω = {scale[len('uniform(') : -1]}"
        loss = c.get("final_loss")
        value = _short(loss["mean"]) if loss and loss.get("n") else "div."
        rows.setdefault(label, {})[c["optimizer.lr"]] = value
    body = [[label, *(v.get(lr, "—") for lr in lrs)] for label, v in rows.items()]
    return _table(["", *(f"lr {lr:g}" for lr in lrs)], body)


#: table name -> renderer(root) -> markdown
TABLES: dict[str, Callable[[Path], str]] = {
    "dni_language": dni_language,
    "dni_language_selection": dni_language_selection,
    "kickback": kickback,
    "kickback_variants": kickback_variants,
    "bartunov_dtp": bartunov_dtp,
    "dtp_lee": dtp_lee,
    "dtp_meulemans": dtp_meulemans,
    "plasticity_patterns": plasticity_patterns,
    "plasticity_images": plasticity_images,
    **{t: functools.partial(_lillicrap_selection, name=f) for t, f in LILLICRAP_SELECTIONS.items()},
    "sweep_fa_scale_lr": sweep_fa_scale_lr,
}


# -- blocks ------------------------------------------------------------------------------------
def _stored_text(root: Path, name: str, start: str | None, stop: str | None) -> str:
    path = root / "data" / "results" / name
    if not path.is_file():
        raise FileNotFoundError(f"README block names data/results/{name}, which does not exist")
    lines = path.read_text().rstrip("\n").splitlines()
    if start is not None:
        i = next((k for k, ln in enumerate(lines) if ln.startswith(start)), None)
        if i is None:
            raise ValueError(f"data/results/{name} has no line starting with {start!r}")
        lines = lines[i:]
    if stop is not None:
        j = next((k for k, ln in enumerate(lines) if k > 0 and ln.startswith(stop)), len(lines))
        lines = lines[:j]
    while lines and not lines[-1].strip():
        lines.pop()
    return "```\n" + "\n".join(ln.rstrip() for ln in lines) + "\n```"


def render(spec: str, root: Path) -> str:
    """The content of the block whose header says ``spec`` (``NAME`` or ``FILE.txt
    [from="…"] [to="…"]``)."""
    parts = shlex.split(spec)
    name, options = parts[0], dict(p.split("=", 1) for p in parts[1:])
    unknown = set(options) - {"from", "to"}
    if unknown:
        raise ValueError(f"README block {spec!r}: unknown option(s) {sorted(unknown)}")
    if name.endswith(".txt"):
        return _stored_text(root, name, options.get("from"), options.get("to"))
    if name not in TABLES:
        raise ValueError(
            f"README block names table {name!r}; known tables: {', '.join(TABLES)} (or a "
            "data/results/*.txt file)"
        )
    return TABLES[name](root)


def blocks(text: str) -> list[tuple[int, int, str]]:
    """(first line, end-marker line, spec) of every block in ``text`` (0-based lines)."""
    lines, out, open_at = text.splitlines(), [], None
    for k, ln in enumerate(lines):
        m = BEGIN.match(ln.strip())
        if m:
            if open_at is not None:
                raise ValueError(f"README line {k + 1}: a results block opens inside another")
            open_at, spec = k, m.group("spec")
        elif ln.strip() == END:
            if open_at is None:
                raise ValueError(f"README line {k + 1}: {END} without an opening block")
            out.append((open_at, k, spec))
            open_at = None
    if open_at is not None:
        raise ValueError(f"README line {open_at + 1}: results block never closed ({END})")
    return out


def regenerate(text: str, root: Path) -> str:
    """``text`` with every block's content rendered from ``root``'s data."""
    lines = text.splitlines()
    for first, last, spec in reversed(blocks(text)):
        lines[first + 1 : last] = render(spec, root).splitlines()
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def check(readme: Path, root: Path) -> str:
    """A unified diff of README against its regenerated form ('' when they agree)."""
    text = readme.read_text()
    new = regenerate(text, root)
    return "".join(
        difflib.unified_diff(
            text.splitlines(True), new.splitlines(True), str(readme), "regenerated from data/"
        )
    )
