"""Hostile split packs: missing, swapped, truncated, escaping, symlinked and inconsistent shards.

A shard is opened, and bound to its index row, when one of its tensors is first
used: a bad shard fails every reader that touches it, naming it, while ``open``
(which reads the index alone) succeeds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import _write, api, split
from modelpack.errors import FormatError, IntegrityError

from .guards import STRUCTURAL, refused

SHARD1, SHARD2, SHARD3 = (f"m-0000{i}-of-00003.mpk" for i in (1, 2, 3))
TOUCHING = tuple(r for r in STRUCTURAL if r != "open")  # every reader that uses a shard's tensors


def refused_when_used(path: Path, cls: type, words: str = "", **kw: Any) -> None:
    """``open`` reads only the index and succeeds; every reader that touches the shards refuses."""
    api.Pack(path).close()
    refused(path, cls, words, readers=TOUCHING, **kw)


@pytest.fixture
def packdir(tmp_path: Path) -> Path:
    folder = tmp_path / "pack"
    folder.mkdir()
    obj = {f"t{i}": np.full(250, i, np.float32) for i in range(3)}
    api.save(obj, folder / "m.mpk", max_shard_size=1000)
    assert sorted(os.listdir(folder)) == [SHARD1, SHARD2, SHARD3, "m.mpk"]
    return folder


def _index(folder: Path) -> dict[str, Any]:
    with api.Pack(folder / "m.mpk") as pack:
        return pack.manifest


def _rewrite_index(folder: Path, *, shards: list[dict[str, Any]] | None = None, tree: Any = None) -> Path:
    man = _index(folder)
    bar = _write.Progress(0, "", False)
    _write._write_one(folder / "m.mpk", man["tree"] if tree is None else tree, [], {}, None, bar, False,
                      shards=man["shards"] if shards is None else shards)
    return folder / "m.mpk"


def test_the_fixture_loads(packdir):
    assert set(api.load(packdir / "m.mpk")) == {"t0", "t1", "t2"}


def test_missing_shard(packdir):
    (packdir / SHARD2).unlink()
    refused_when_used(packdir / "m.mpk", FormatError, f"shard {SHARD2!r} is missing", where=f"shard {SHARD2!r}")


def test_swapped_shards(packdir):
    os.rename(packdir / SHARD1, packdir / "tmp.mpk")
    os.rename(packdir / SHARD2, packdir / SHARD1)
    os.rename(packdir / "tmp.mpk", packdir / SHARD2)
    refused_when_used(packdir / "m.mpk", IntegrityError, f"shard {SHARD1!r} is not the one the index binds")


def test_truncated_shard(packdir):
    data = (packdir / SHARD3).read_bytes()
    (packdir / SHARD3).write_bytes(data[:-10])
    refused_when_used(packdir / "m.mpk", IntegrityError, f"shard {SHARD3!r} is {len(data) - 10:,} bytes, the index says")


def test_extended_shard(packdir):
    with open(packdir / SHARD1, "ab") as f:
        f.write(b"\0")
    refused_when_used(packdir / "m.mpk", IntegrityError, "truncated, extended or replaced")


def test_replaced_shard_of_the_same_size(packdir):
    api.save({"t0": np.full(250, 9, np.float32)}, packdir / "other.mpk")
    shutil.copy(packdir / "other.mpk", packdir / SHARD1)
    refused_when_used(packdir / "m.mpk", IntegrityError, "SHA-256 differs")


@pytest.mark.parametrize("name", ["../m-00001-of-00003.mpk", "/etc/passwd.mpk", "sub/x.mpk", ".hidden.mpk",
                                  "x.npy", "a..b.mpk", "", 7])
def test_shard_names_that_leave_the_folder(packdir, name):
    rows = _index(packdir)["shards"]
    rows[0]["file"] = name
    refused(_rewrite_index(packdir, shards=rows), FormatError, "is not a plain .mpk file name")


def test_symlinked_shard_pointing_outside(packdir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(packdir / SHARD2, outside / SHARD2)
    os.symlink(outside / SHARD2, packdir / SHARD2)
    refused_when_used(packdir / "m.mpk", FormatError, "symbolic link")


def test_symlinked_shard_inside_the_folder(packdir):
    shutil.move(packdir / SHARD2, packdir / "real.mpk")
    os.symlink("real.mpk", packdir / SHARD2)
    refused_when_used(packdir / "m.mpk", FormatError, "symbolic link")


def test_shard_listed_twice(packdir):
    rows = _index(packdir)["shards"]
    refused(_rewrite_index(packdir, shards=[rows[0], rows[1], dict(rows[0])]), FormatError, "listed twice")


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r.update(size=-1), "not a non-negative integer"),
    (lambda r: r.update(size=1.0), "not a non-negative integer"),
    (lambda r: r.update(sha256="AB" * 32), "64 lowercase hex"),
    (lambda r: r.update(extra=1), "exactly the keys"),
    (lambda r: r.pop("sha256"), "exactly the keys"),
])
def test_malformed_shard_rows(packdir, mutate, words):
    rows = _index(packdir)["shards"]
    mutate(rows[1])
    refused(_rewrite_index(packdir, shards=rows), FormatError, words)


@pytest.mark.parametrize("shards", [[], {}, "m-00001-of-00003.mpk"])
def test_shards_not_a_list(packdir, shards):
    refused(_rewrite_index(packdir, shards=shards), FormatError, "non-empty list")


def test_tree_refers_to_a_tensor_no_shard_has(packdir):
    tree = _index(packdir)["tree"]
    tree["t9"] = {"$tensor": "t9"}
    refused(_rewrite_index(packdir, tree=tree), FormatError, "unknown tensor 't9'")


def test_shard_tensor_the_tree_does_not_use(packdir):
    tree = _index(packdir)["tree"]
    del tree["t1"]
    refused(_rewrite_index(packdir, tree=tree), FormatError, "'t1' is not used by the tree")


def test_same_tensor_in_two_shards(packdir):
    rows = _index(packdir)["shards"]
    shutil.copy(packdir / SHARD1, packdir / "copy.mpk")
    rows.append(dict(rows[0], file="copy.mpk"))
    refused(_rewrite_index(packdir, shards=rows), FormatError, "is in two shards")


def test_a_shard_that_is_itself_an_index(packdir):
    shutil.copy(packdir / "m.mpk", packdir / "inner.mpk")
    rows = _index(packdir)["shards"]
    blob = _inner_manifest(packdir / "inner.mpk")
    rows.append({"file": "inner.mpk", "size": os.path.getsize(packdir / "inner.mpk"),
                 "sha256": split.manifest_digest(blob)})
    for row in rows:  # an index without name lists opens every shard up front
        row.pop("tensors", None)
    refused(_rewrite_index(packdir, shards=rows), FormatError, "itself a split index")


def _inner_manifest(path: Path) -> bytes:
    with api.Pack(path) as pack:
        m = pack.members["manifest.json"]
        return pack.source.pread(m.size, m.data_offset)


def test_an_index_with_tensors_of_its_own(packdir):
    rows = _index(packdir)["shards"]
    api.save({"x": np.zeros(2)}, packdir / "own.mpk")
    with api.Pack(packdir / "own.mpk") as pack:
        man = pack.manifest
    bar = _write.Progress(0, "", False)
    from modelpack import tree as mtree
    tree_json, leaves = mtree.encode({"x": np.zeros(2)})
    payloads = _write._payloads(leaves)
    _write._write_one(packdir / "m.mpk", tree_json, payloads, man["metadata"], None, bar, False, shards=rows)
    refused(packdir / "m.mpk", FormatError, "holds no tensors of its own")


def test_an_index_from_bytes_cannot_find_its_shards(packdir):
    data = (packdir / "m.mpk").read_bytes()
    with pytest.raises(FormatError, match="open the index by path or URL"):
        api.load(data)


# --------------------------------------------------------------------------- lazy shards


def test_a_damaged_shard_never_touched_does_not_stop_the_others(packdir):
    data = (packdir / SHARD3).read_bytes()
    (packdir / SHARD3).write_bytes(data[:-10])
    assert api.load(packdir / "m.mpk", keys=["t0", "t1"])["t1"][0] == 1
    with api.Pack(packdir / "m.mpk") as pack:
        assert pack.keys() == ["t0", "t1", "t2"] and len(pack) == 3 and "t2" in pack
        assert pack["t0"][0] == 0
        with pytest.raises(IntegrityError, match=f"shard {SHARD3!r} is .* bytes, the index says") as e:
            pack["t2"]
        assert e.value.where == f"shard {SHARD3!r}" and str(packdir / "m.mpk") in str(e.value)
        with pytest.raises(IntegrityError, match=SHARD3):
            pack.verify()


def test_names_and_order_come_from_the_index_alone(packdir):
    for name in (SHARD1, SHARD2, SHARD3):
        (packdir / name).unlink()
    with api.Pack(packdir / "m.mpk") as pack:
        assert list(pack) == ["t0", "t1", "t2"] and "t1" in pack and "t9" not in pack
        with pytest.raises(FormatError, match=f"shard {SHARD2!r} is missing"):
            pack["t1"]
        with pytest.raises(KeyError, match="t9"):
            pack.select(["t9"])


def test_a_shard_opened_later_is_found_beside_the_index_not_the_working_folder(packdir, tmp_path, monkeypatch):
    monkeypatch.chdir(packdir)
    pack = api.Pack("m.mpk")
    monkeypatch.chdir(tmp_path)
    with pack:
        assert pack["t2"][0] == 2


def test_a_closed_index_opens_no_shard(packdir):
    pack = api.Pack(packdir / "m.mpk")
    pack.close()
    with pytest.raises(ValueError, match="closed"):
        pack["t0"]


def test_rows_whose_names_disagree_with_their_shards(packdir):
    rows = _index(packdir)["shards"]
    rows[0]["tensors"], rows[1]["tensors"] = rows[1]["tensors"], rows[0]["tensors"]
    path = _rewrite_index(packdir, shards=rows)
    refused_when_used(path, FormatError, f"shard {SHARD1!r} does not hold the tensors the index lists")
    assert api.load(path, keys=["t2"])["t2"][0] == 2  # the third row is right: its shard is used as bound


@pytest.mark.parametrize("mutate, words", [
    (lambda rows: rows[1].update(tensors="t1"), "must be a list of names"),
    (lambda rows: rows[1].update(tensors=["../t1"]), "not a valid tensor name"),
    (lambda rows: rows[1].update(tensors=[7]), "not a valid tensor name"),
    (lambda rows: rows[1].update(tensors=["t1\nt2"]), "not a valid tensor name"),  # one name, two lines
    (lambda rows: rows[1].update(tensors=["t1."]), "not a valid tensor name"),
    (lambda rows: rows[1].update(tensors=["t1", ""]), "not a valid tensor name"),
    (lambda rows: rows[1].update(tensors=["x" * 5000]), "not a valid tensor name"),
    (lambda rows: rows[1].update(tensors=["t1", "t1"]), "'t1' is in two shards"),
    (lambda rows: rows[2].update(tensors=["t0"]), "'t0' is in two shards"),
    (lambda rows: rows[1].pop("tensors"), "either every shard lists its 'tensors' or none does"),
    (lambda rows: rows[2].update(tensors=["t2", "t9"]), "'t9' is not used by the tree"),
])
def test_malformed_name_lists(packdir, mutate, words):
    rows = _index(packdir)["shards"]
    mutate(rows)
    refused(_rewrite_index(packdir, shards=rows), FormatError, words)


def test_an_index_without_name_lists_opens_every_shard_up_front(packdir):
    rows = _index(packdir)["shards"]
    for row in rows:
        del row["tensors"]
    path = _rewrite_index(packdir, shards=rows)
    assert {k: float(v[0]) for k, v in api.load(path).items()} == {"t0": 0.0, "t1": 1.0, "t2": 2.0}
    (packdir / SHARD3).unlink()
    refused(path, FormatError, f"shard {SHARD3!r} is missing")
