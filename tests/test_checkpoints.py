"""Checkpoints: atomic, read with weights_only, continued only by the run that wrote them."""

import json
import os
import pickle

import pytest
import torch

import bioprop as bp
from bioprop.training.checkpoints import CheckpointError, CheckpointMismatchError


def data():
    return bp.data.linear_teacher(n_in=8, n_out=3, n_train=40, n_test=16, seed=1)


def run(tmp_path, rule="fa", lr=0.05, resume=False, epochs=1, batch_size=4, record=True, **kw):
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", init=bp.init.uniform(0.3), seed=0)
    return bp.train(
        c,
        rule,
        data(),
        optimizer=("sgd", {"lr": lr}),
        epochs=epochs,
        batch_size=batch_size,
        seed=0,
        checkpoint=bp.Checkpoint(tmp_path / "ckpt.pt", every=3),
        resume=resume,
        record=bp.Record(tmp_path / "rec.h5", every=2) if record else None,
        progress=False,
        **kw,
    )


class Evil:
    """Unpickling this calls os.system — what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    payload = {"format": "bioprop-checkpoint-1", "step": Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing checkpoint .*ckpt\.pt.*could run code"):
        run(tmp_path, resume=True)
    assert not marker.exists()
    assert not (tmp_path / "rec.h5").exists()  # refused before anything was written


def test_resuming_a_checkpoint_with_another_rule_lists_the_differences(tmp_path):
    run(tmp_path, max_steps=6)
    with pytest.raises(CheckpointMismatchError) as info:
        run(tmp_path, rule="sign-symmetry", resume=True)
    msg = str(info.value)
    assert "ckpt.pt" in msg and "rule: 'fa' (checkpoint) vs 'sign-symmetry' (asked)" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"batch_size": 8}, "batch_size: 4 (checkpoint) vs 8 (asked)"),
        ({"loss": "cross-entropy"}, "loss: 'mse' (checkpoint) vs 'cross-entropy' (asked)"),
        ({"seed": 1}, "seed: 0 (checkpoint) vs 1 (asked)"),
    ],
)
def test_resuming_with_other_hyperparameters_is_refused(tmp_path, change, expected):
    run(tmp_path, max_steps=6)
    if "seed" in change:
        c = bp.Circuit.layered([8, 6, 3], activation="tanh", init=bp.init.uniform(0.3), seed=0)
        with pytest.raises(CheckpointMismatchError, match="seed: 0"):
            bp.train(
                c,
                "fa",
                data(),
                optimizer=("sgd", {"lr": 0.05}),
                batch_size=4,
                seed=1,
                checkpoint=bp.Checkpoint(tmp_path / "ckpt.pt", every=3),
                resume=True,
                progress=False,
            )
        return
    with pytest.raises(CheckpointMismatchError) as info:
        run(tmp_path, resume=True, **change)
    assert expected in str(info.value)


def test_a_new_learning_rate_is_refused_unless_asked_for_and_then_recorded(tmp_path):
    run(tmp_path, max_steps=6)
    with pytest.raises(CheckpointMismatchError, match=r"circuit group lr: 0\.05 .* 0\.1 .*allow"):
        run(tmp_path, lr=0.1, resume=True)
    r = run(tmp_path, lr=0.1, resume="allow-lr-change", epochs=2)
    assert r.steps == 20
    with bp.load(tmp_path / "rec.h5") as rec:
        notes = json.loads(rec.attrs["resumed"])
        assert rec["metrics"].ds.step.values.tolist() == list(range(0, 20, 2))
    assert notes[-1]["step"] == 6
    assert notes[-1]["changes"] == ["circuit group lr: 0.05 (checkpoint) vs 0.1 (asked)"]
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1


def test_more_epochs_may_continue_a_checkpoint(tmp_path):
    run(tmp_path, epochs=1)
    r = run(tmp_path, epochs=2, resume=True)
    assert r.steps == 20


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a readable checkpoint"),
        (b"hello, I am notes", "not a readable checkpoint"),
        ("truncated", "not a readable checkpoint"),
        ("state_dict", "not a bioprop checkpoint"),
    ],
)
def test_a_truncated_or_foreign_file_given_to_resume_is_refused(tmp_path, content, match):
    path = tmp_path / "ckpt.pt"
    if content == "truncated":
        run(tmp_path, max_steps=6, record=False)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "state_dict":
        torch.save(bp.Circuit.layered([8, 6, 3], seed=0).state_dict(), path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        run(tmp_path, resume=True)
    assert "ckpt.pt" in str(info.value) and "resume=False" in str(info.value)


def test_checkpoints_are_written_under_a_temporary_name_and_renamed(tmp_path, monkeypatch):
    import bioprop.recording.files as files

    renamed = []
    real = files.os.replace

    def spy(src, dst):
        renamed.append((os.path.dirname(src), os.path.basename(src), dst))
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    run(tmp_path, max_steps=6, record=False)
    ckpt = [r for r in renamed if str(r[2]).endswith("ckpt.pt")]
    assert ckpt and all(d == str(tmp_path) and n.startswith(".ckpt.pt.") for d, n, _ in ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_bad_resume_option_is_refused():
    with pytest.raises(ValueError, match="resume must be False, True or 'allow-lr-change'"):
        bp.train(bp.Circuit.layered([8, 6, 3]), "fa", data(), resume="yes", progress=False)
