"""docs/extending.md runs as written: every python block and every `$ bioprop` command, in
order, in an empty directory; and the rule it shows is the library's kp."""

import copy
import re
import shlex
from pathlib import Path

import pytest
import torch

import bioprop as bp
from bioprop.experiments.cli import main
from bioprop.rules import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"^```(python|console)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """Run the page once; yields the namespace of its python blocks and each command's
    (arguments, exit code, output)."""
    workdir = tmp_path_factory.mktemp("extending")
    saved = dict(registry._REGISTRY)  # the page registers a rule of its own; put it back
    mp = pytest.MonkeyPatch()
    mp.chdir(workdir)
    ns: dict = {"__name__": "extending_doc"}
    commands = []
    try:
        for i, (lang, code) in enumerate(blocks()):
            if lang == "python":
                exec(compile(code, f"{DOC.name}:block{i}", "exec"), ns)
                continue
            for line in code.splitlines():
                if line.startswith("$ bioprop "):
                    argv = shlex.split(line[len("$ bioprop ") :])
                    out = _run_cli(argv + (["--no-progress"] if argv[0] == "compare" else []))
                    commands.append((argv, *out))
        yield ns, commands, workdir
    finally:
        mp.undo()
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


def _run_cli(argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def test_the_page_has_python_blocks_and_the_commands_it_describes():
    kinds = [lang for lang, _ in blocks()]
    assert kinds.count("python") >= 5
    text = "\n".join(code for lang, code in blocks() if lang == "console")
    assert "$ bioprop rules" in text
    assert "$ bioprop compare --task linear --rules bp,fa,kp --quick" in text


def test_every_command_of_the_page_succeeds_and_shows_kp(doc_run):
    _, commands, workdir = doc_run
    assert [c[0][0] for c in commands] == ["rules", "compare"]
    for argv, rc, out in commands:
        assert rc == 0, (argv, out)
    rules_out = commands[0][2]
    assert re.search(r"^kp\s+layered\s+Kolen-Pollack", rules_out, re.M)
    table = commands[1][2]
    assert re.search(r"^kp\s+\S+", table, re.M) and "angle to bp" in table
    for r in ("bp", "fa", "kp"):
        assert (workdir / "runs" / "compare-linear" / f"{r}-seed0.h5").exists()


def test_kp_brings_b_to_w_transpose_while_fa_does_not(doc_run):
    ns, _, _ = doc_run
    angle = ns["final_angle"]
    assert angle["kp"] < 10, angle
    assert angle["fa"] > 30, angle
    assert angle["kp"] < angle["fa"] / 4


def test_the_rule_shown_on_the_page_trains_exactly_like_the_librarys_kp(doc_run):
    ns, _, _ = doc_run
    task = bp.tasks.get("linear")
    data = task.load(0, True)
    base = task.circuit(0)
    finals = []
    for rule in (ns["KolenPollack"](), bp.rules.get("kp")):
        c = copy.deepcopy(base)
        bp.train(c, rule, data, optimizer=("sgd", {"lr": 0.01}), batch_size=1, max_steps=60,
                 seed=0, progress=False)  # fmt: skip
        finals.append(dict(c.named_parameters()))
    doc, lib = finals
    assert doc.keys() == lib.keys() and any("output->hidden" in k for k in doc)
    for k in doc:
        assert torch.equal(doc[k], lib[k]), k
