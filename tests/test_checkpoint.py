"""Checkpointer: what a checkpoint holds, retention, restore and its fallbacks, leftovers."""

from __future__ import annotations

import fcntl
import os
import random
import threading

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError
from modelpack.checkpoint import Checkpointer, CheckpointWarning, describe_checkpoint
from modelpack.checkpoint._files import steps_to_keep

from conftest import bits_equal, run_python

torch = pytest.importorskip("torch")

DEAD_PID = 99_999_999  # above Linux's pid_max: never a live process


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _fresh():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def _same_tree(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, (torch.Tensor, np.ndarray)):
        return bits_equal(a, b)
    return a == b


def _names(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- what is saved


def test_model_optimizer_scheduler_round_trip_exactly(tmp_path):
    model, opt, sched = _trained()
    ckpt = Checkpointer(tmp_path)
    path = ckpt.save(1200, model=model, optimizer=opt, scheduler=sched, extra={"epoch": 3, "best": 0.25})
    assert path.name == "ckpt-000000001200.mpk"

    model2, opt2, sched2 = _fresh()
    assert Checkpointer(tmp_path).restore(model=model2, optimizer=opt2, scheduler=sched2) == 1201
    assert _same_tree(model.state_dict(), model2.state_dict())
    assert _same_tree(opt.state_dict(), opt2.state_dict())  # int keys, tuples, floats, tensors
    assert _same_tree(sched.state_dict(), sched2.state_dict())


def test_restore_reports_step_path_and_extra(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(7, extra={"epoch": 2, "ids": (1, 2), "t": torch.arange(3)})
    again = Checkpointer(tmp_path)
    assert again.restore() == 8
    info = again.restored
    assert (info.step, info.path.name, info.skipped) == (7, "ckpt-000000000007.mpk", ())
    assert info.extra["epoch"] == 2 and info.extra["ids"] == (1, 2)
    assert bits_equal(info.extra["t"], torch.arange(3))


def test_no_checkpoint_restores_nothing_and_returns_zero(tmp_path):
    model, _, _ = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = Checkpointer(tmp_path / "never-created")
    assert ckpt.restore(model=model) == 0
    assert ckpt.restored is None and ckpt.latest() is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (tmp_path / "never-created").exists()


def test_several_optimizers_and_schedulers_as_lists_and_dicts(tmp_path):
    gen = torch.nn.Linear(3, 3)
    disc = torch.nn.Linear(3, 1)
    opts = {"g": torch.optim.Adam(gen.parameters()), "d": torch.optim.SGD(disc.parameters(), lr=0.1, momentum=0.9)}
    scheds = [torch.optim.lr_scheduler.ExponentialLR(opts["g"], 0.9), torch.optim.lr_scheduler.StepLR(opts["d"], 1)]
    for _ in range(2):
        (gen(torch.ones(2, 3)).sum() + disc(torch.ones(2, 3)).sum()).backward()
        for o in opts.values():
            o.step()
        for s in scheds:
            s.step()
    Checkpointer(tmp_path).save(5, model={"gen": gen, "disc": disc}, optimizer=opts, scheduler=scheds)

    gen2, disc2 = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    opts2 = {"g": torch.optim.Adam(gen2.parameters()), "d": torch.optim.SGD(disc2.parameters(), lr=0.1, momentum=0.9)}
    scheds2 = [torch.optim.lr_scheduler.ExponentialLR(opts2["g"], 0.9), torch.optim.lr_scheduler.StepLR(opts2["d"], 1)]
    Checkpointer(tmp_path).restore(model={"gen": gen2, "disc": disc2}, optimizer=opts2, scheduler=scheds2)
    for k in opts:
        assert _same_tree(opts[k].state_dict(), opts2[k].state_dict())
    assert all(_same_tree(a.state_dict(), b.state_dict()) for a, b in zip(scheds, scheds2))
    assert torch.equal(gen.weight, gen2.weight)


def test_grad_scaler_state_round_trips(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    scaler.scale(torch.ones(1))
    scaler.update(512.0)
    Checkpointer(tmp_path).save(0, scaler=scaler)
    scaler2 = torch.amp.GradScaler("cpu")
    Checkpointer(tmp_path).restore(scaler=scaler2)
    assert scaler2.state_dict() == scaler.state_dict()
    assert scaler2.get_scale() == 512.0


def test_global_rng_streams_continue_where_they_were(tmp_path):
    ckpt = Checkpointer(tmp_path)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached gaussian in both
    ckpt.save(0)
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.standard_normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore()
    got = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.standard_normal(), torch.rand(3))
    assert got[:2] == expected[:2] and got[3] == expected[3]
    assert np.array_equal(got[2], expected[2]) and torch.equal(got[4], expected[4])


def test_rng_false_leaves_the_streams_alone(tmp_path):
    Checkpointer(tmp_path).save(0, rng=False)
    assert "rng" not in modelpack.load(tmp_path / "ckpt-000000000000.mpk")
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    Checkpointer(tmp_path).restore()
    assert torch.equal(torch.rand(2), expected)


@pytest.mark.parametrize("make", [
    lambda: np.random.default_rng(7),  # PCG64: 128-bit integers in its state
    lambda: np.random.Generator(np.random.MT19937(7)),
    lambda: np.random.Generator(np.random.Philox(7)),
    lambda: np.random.Generator(np.random.SFC64(7)),
    lambda: np.random.RandomState(7),
    lambda: random.Random(7),
    lambda: torch.Generator().manual_seed(7),
], ids=["pcg64", "mt19937", "philox", "sfc64", "randomstate", "python", "torch"])
def test_named_generators_round_trip(tmp_path, make):
    def draw(g):
        if isinstance(g, torch.Generator):
            return torch.rand(4, generator=g).tolist()
        if isinstance(g, random.Random):
            return [g.random() for _ in range(4)]
        return list(g.random(4) if isinstance(g, np.random.Generator) else g.rand(4))

    g = make()
    draw(g)
    Checkpointer(tmp_path).save(1, generators={"g": g})
    expected = draw(g)
    g2 = make()
    Checkpointer(tmp_path).restore(generators={"g": g2})
    assert draw(g2) == expected


def test_restoring_a_generator_into_another_kind_is_refused(tmp_path):
    Checkpointer(tmp_path).save(1, generators={"g": np.random.default_rng(1)})
    with pytest.raises(CheckpointError, match=r"generators\['g'\].*numpy.random.Generator.*torch.Generator"):
        Checkpointer(tmp_path).restore(generators={"g": torch.Generator()})
    with pytest.raises(CheckpointError, match="no generator 'h'"):
        Checkpointer(tmp_path).restore(generators={"h": np.random.default_rng(1)})


def test_metadata_shows_step_contents_and_sizes(tmp_path):
    model, opt, _ = _trained()
    Checkpointer(tmp_path).save(42, model=model, optimizer=opt, metadata={"run": "exp1"})
    with modelpack.open(tmp_path / "ckpt-000000000042.mpk") as pack:
        meta = pack.metadata
    assert meta["modelpack.checkpoint.step"] == "42"
    assert meta["modelpack.checkpoint.contents"] == "model, optimizer, rng"
    assert meta["modelpack.checkpoint.sizes"].startswith("model=232 B, optimizer=")
    assert meta["run"] == "exp1"


def test_describe_checkpoint(tmp_path):
    model, opt, _ = _trained()
    path = Checkpointer(tmp_path).save(3, model=model, optimizer=opt, extra={"note": "x"})
    info = describe_checkpoint(path, verify=True)
    assert info["step"] == 3 and info["format_version"] == 1
    assert info["sections"]["model"] == {"tensors": 4, "bytes": 4 * (32 + 8 + 16 + 2)}
    assert info["sections"]["optimizer"]["tensors"] == 12
    assert info["sections"]["extra"] == {"tensors": 0, "bytes": 0}
    assert info["file_bytes"] == path.stat().st_size


def test_describe_refuses_a_plain_pack(tmp_path):
    modelpack.save({"w": np.zeros(2)}, tmp_path / "plain.mpk")
    with pytest.raises(CheckpointError, match="not a modelpack checkpoint"):
        describe_checkpoint(tmp_path / "plain.mpk")


def test_unsupported_extra_fails_at_the_call_and_writes_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path)
    for blocking in (True, False):
        with pytest.raises(modelpack.errors.UnsupportedObjectError, match=r"obj\['extra'\]\['fn'\]: cannot save"):
            ckpt.save(1, extra={"fn": print}, blocking=blocking)
    ckpt.wait()
    assert not tmp_path.exists() or _names(tmp_path) == []


# --------------------------------------------------------------------------- restore mismatches


def test_component_missing_from_the_checkpoint_is_an_error(tmp_path):
    model, _, _ = _trained()
    Checkpointer(tmp_path).save(1, model=model)
    _, opt, _ = _fresh()
    with pytest.raises(CheckpointError, match=r"optimizer= was given but the checkpoint holds no optimizer.*model"):
        Checkpointer(tmp_path).restore(optimizer=opt)


def test_component_shape_mismatch_is_an_error(tmp_path):
    model, opt, _ = _trained()
    Checkpointer(tmp_path).save(1, optimizer=opt)
    with pytest.raises(CheckpointError, match=r"optimizer: a list of 2 given, but the checkpoint holds a single"):
        Checkpointer(tmp_path).restore(optimizer=[opt, opt])


def test_model_architecture_mismatch_names_the_file(tmp_path):
    model, _, _ = _trained()
    Checkpointer(tmp_path).save(1, model=model)
    with pytest.raises(CheckpointError, match=r"ckpt-000000000001.mpk: model: load_state_dict failed"):
        Checkpointer(tmp_path).restore(model=torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(4, 8))
    Checkpointer(tmp_path).restore(model=other, strict=False)
    assert torch.equal(other[0].weight, model[0].weight)


@pytest.mark.parametrize("step, exc", [(-1, ValueError), (1.0, TypeError), (True, TypeError), (10**18, ValueError)])
def test_bad_steps_are_refused(tmp_path, step, exc):
    with pytest.raises(exc, match="step"):
        Checkpointer(tmp_path).save(step)


@pytest.mark.parametrize("kwargs", [{"keep_last": 0}, {"keep_every": -5}, {"prefix": "../x"}, {"keep_last": 1.5}])
def test_bad_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, **kwargs)


def test_numpy_integer_steps_are_accepted(tmp_path):
    assert Checkpointer(tmp_path).save(np.int64(12)).name == "ckpt-000000000012.mpk"


def test_reserved_metadata_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        Checkpointer(tmp_path).save(1, metadata={"modelpack.checkpoint.step": "2"})


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize("keep_last, keep_every, expected", [
    (3, None, {8, 9, 10}),
    (2, 4, {0, 4, 8, 9, 10}),
    (None, None, set(range(11))),
    (1, 5, {0, 5, 10}),
])
def test_retention_policy(keep_last, keep_every, expected):
    assert steps_to_keep(range(11), keep_last, keep_every) == expected


def test_retention_on_disk_keeps_last_n_and_every_kth(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2, keep_every=5)
    for step in range(12):
        ckpt.save(step, extra={"s": step})
        assert len(ckpt.checkpoints()) <= 2 + step // 5 + 1
    assert [c.step for c in ckpt.checkpoints()] == [0, 5, 10, 11]


def test_the_checkpoint_just_written_is_never_pruned(tmp_path):
    """A lower step branches: the higher old ones move aside (tests/test_checkpoint_branch.py), the new stays."""
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(500)
    with pytest.warns(CheckpointWarning, match="branched"):
        ckpt.save(450)
    assert [c.step for c in ckpt.checkpoints()] == [450]
    ckpt.save(460)
    assert [c.step for c in ckpt.checkpoints()] == [460]


def test_other_files_in_the_folder_are_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "ckpt-best.mpk").write_bytes(b"x")
    ckpt = Checkpointer(tmp_path, keep_last=1)
    for step in range(3):
        ckpt.save(step)
    assert _names(tmp_path) == ["ckpt-000000000002.mpk", "ckpt-best.mpk", "notes.txt"]


def test_prefixes_separate_two_series_in_one_folder(tmp_path):
    Checkpointer(tmp_path, keep_last=1).save(1, extra={"kind": "regular"})
    best = Checkpointer(tmp_path, keep_last=1, prefix="best")
    best.save(0, extra={"kind": "best"})
    assert best.restore() == 1 and best.restored.extra == {"kind": "best"}
    assert _names(tmp_path) == ["best-000000000000.mpk", "ckpt-000000000001.mpk"]


# --------------------------------------------------------------------------- damage and fallback


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate], ids=["bit-flip", "truncation"])
def test_damaged_newest_falls_back_with_a_warning_naming_it(tmp_path, damage):
    ckpt = Checkpointer(tmp_path, keep_last=3)
    for step in (10, 20, 30):
        ckpt.save(step, extra={"w": torch.full((4096,), float(step))})
    damage(tmp_path / "ckpt-000000000030.mpk")
    with pytest.warns(CheckpointWarning, match=r"ckpt-000000000030\.mpk is damaged"):
        assert ckpt.restore() == 21
    assert ckpt.restored.step == 20 and torch.all(ckpt.restored.extra["w"] == 20)
    assert [p.name for p, _ in ckpt.restored.skipped] == ["ckpt-000000000030.mpk"]


def test_a_file_whose_content_has_another_step_is_skipped(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1)
    (tmp_path / "ckpt-000000000009.mpk").write_bytes((tmp_path / "ckpt-000000000001.mpk").read_bytes())
    with pytest.warns(CheckpointWarning, match="file name says step 9, the content says 1"):
        assert ckpt.restore() == 2


def test_a_plain_pack_with_a_checkpoint_name_is_skipped(tmp_path):
    Checkpointer(tmp_path).save(1)
    modelpack.save({"w": np.ones(3)}, tmp_path / "ckpt-000000000002.mpk")
    with pytest.warns(CheckpointWarning, match="not a modelpack checkpoint"):
        assert Checkpointer(tmp_path).restore() == 2


def test_when_nothing_verifies_restore_raises_listing_every_file(tmp_path):
    ckpt = Checkpointer(tmp_path)
    for step in (1, 2):
        ckpt.save(step)
        _truncate(tmp_path / f"ckpt-00000000000{step}.mpk")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError) as info:
        ckpt.restore()
    assert "ckpt-000000000001.mpk" in str(info.value) and "ckpt-000000000002.mpk" in str(info.value)


def test_restore_from_one_file(tmp_path):
    model, opt, _ = _trained()
    path = Checkpointer(tmp_path / "a").save(77, model=model, optimizer=opt)
    moved = tmp_path / "elsewhere.mpk"
    path.rename(moved)
    model2, opt2, _ = _fresh()
    ckpt = Checkpointer(tmp_path / "b")
    assert ckpt.restore(model=model2, optimizer=opt2, path=moved) == 78
    assert ckpt.restored.path == moved and torch.equal(model2[0].weight, model[0].weight)


def test_a_checkpointer_on_a_file_restores_that_file(tmp_path):
    path = Checkpointer(tmp_path).save(9, extra={"k": 1})
    ckpt = Checkpointer(path)
    assert ckpt.restore() == 10 and ckpt.restored.extra == {"k": 1}
    assert ckpt.checkpoints() == []


def test_an_explicit_damaged_file_raises_instead_of_falling_back(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1)
    path = ckpt.save(2)
    _truncate(path)
    with pytest.raises(CheckpointError, match=r"ckpt-000000000002\.mpk: cannot read the checkpoint"):
        ckpt.restore(path=path)
    with pytest.raises(CheckpointError, match="No such file"):
        ckpt.restore(path=tmp_path / "missing.mpk")


# --------------------------------------------------------------------------- leftovers and writers


def _temp_name(step: int, pid: int, token: str = "0123456789ab") -> str:
    return f".ckpt-{step:012d}.mpk.{pid}.{token}.mpk-tmp"


def test_leftover_temps_are_ignored_by_restore_and_swept_by_the_next_save(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1)
    dead = [_temp_name(2, DEAD_PID), _temp_name(7, DEAD_PID, "abcdef012345")]
    live = _temp_name(3, DEAD_PID, "fedcba987654")  # its writer holds the lock: it must survive
    for name in dead + [live]:
        (tmp_path / name).write_bytes(b"PK\x03\x04 half a zip")
    assert Checkpointer(tmp_path).restore() == 2
    fd = os.open(tmp_path / live, os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ckpt.save(2)
    finally:
        os.close(fd)
    assert _names(tmp_path) == sorted([live, "ckpt-000000000001.mpk", "ckpt-000000000002.mpk"])


@pytest.mark.filterwarnings("ignore::modelpack.checkpoint.CheckpointWarning")  # racing steps branch often
def test_two_writers_on_one_folder_never_corrupt_a_file(tmp_path):
    """Same steps, different content, racing: every file verifies; each holds one writer's whole state."""
    errors: list[BaseException] = []

    def writer(tag: int) -> None:
        ckpt = Checkpointer(tmp_path, keep_last=3)
        try:
            for step in range(12):
                ckpt.save(step, extra={"tag": tag, "w": np.full(50_000, tag * 1000 + step, np.int64)})
        except BaseException as e:  # noqa: BLE001 - handed to the main thread's assertion
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ckpt = Checkpointer(tmp_path)
    files = ckpt.checkpoints()
    assert files[-1].step == 11 and not [n for n in _names(tmp_path) if n.endswith(".mpk-tmp")]
    for f in files:
        state = modelpack.load(f.path, verify=True)
        tag = state["extra"]["tag"]
        assert np.all(state["extra"]["w"] == tag * 1000 + f.step)


NUMPY_ONLY = r"""
import sys
import numpy as np
from modelpack.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1])
ckpt.save(3, extra={"w": np.arange(4)}, generators={"g": np.random.default_rng(0)})
assert ckpt.restore(generators={"g": np.random.default_rng(1)}) == 4
print("torch" in sys.modules)
"""


def test_a_numpy_only_program_never_imports_torch(tmp_path):
    done = run_python(NUMPY_ONLY, str(tmp_path))
    assert done.stdout == "False\n", done.stderr
