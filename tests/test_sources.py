"""Packs from file objects, bytes, fsspec URLs and an HTTP server with Range support (requests counted)."""

from __future__ import annotations

import http.server
import io
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from modelpack import api, inspect
from modelpack.errors import FormatError, NotAModelPackError

from conftest import bits_equal


def _obj() -> dict:
    rng = np.random.default_rng(1)
    return {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7), "c": [1, "x", 2.5]}


def _same(a: dict, b: dict) -> bool:
    return bits_equal(a["a"], b["a"]) and bits_equal(a["b"], b["b"]) and a["c"] == b["c"]


# --------------------------------------------------------------------------- file objects and bytes


def test_save_bytes_load_bytes():
    data = api.save_bytes(_obj(), metadata={"k": "v"})
    assert isinstance(data, bytes)
    assert _same(api.load_bytes(data), _obj())
    with api.open(data) as pack:
        assert pack.metadata == {"k": "v"} and pack.path == "<bytes>"


def test_save_bytes_is_the_file(tmp_path):
    api.save(_obj(), tmp_path / "f.mpk")
    assert (tmp_path / "f.mpk").read_bytes() == api.save_bytes(_obj())


def test_save_to_a_file_object_and_load_from_one(tmp_path):
    buf = io.BytesIO()
    api.save(_obj(), buf)
    buf.seek(0)
    assert _same(api.load(buf), _obj())
    with open(tmp_path / "f.mpk", "wb") as f:
        api.save(_obj(), f)
    with open(tmp_path / "f.mpk", "rb") as f:
        assert _same(api.load(f, mmap=True), _obj())  # a file object is read, never mapped
        api.verify(f)


def test_big_member_through_a_file_object(tmp_path):
    big = np.arange(3 << 20, dtype=np.uint8)  # past the writer's threshold for a background CRC
    buf = io.BytesIO()
    api.save({"big": big}, buf)
    assert bits_equal(api.load_bytes(buf.getvalue())["big"], big)
    api.verify(buf.getvalue())


def test_loaded_from_bytes_is_a_copy():
    data = bytearray(api.save_bytes({"a": np.zeros(4, np.float32)}))
    out = api.load_bytes(data)["a"]
    out[:] = 1
    assert not api.load_bytes(data)["a"].any()


def test_load_bytes_refuses_other_types():
    with pytest.raises(TypeError, match="load_bytes takes bytes"):
        api.load_bytes("not bytes")  # type: ignore[arg-type]


def test_damage_in_bytes_is_caught():
    data = bytearray(api.save_bytes(_obj()))
    data[-30] ^= 0xFF
    with pytest.raises(FormatError):
        api.load_bytes(data)
    with pytest.raises(NotAModelPackError, match="empty"):
        api.load_bytes(b"")


def test_unreadable_file_objects_are_refused(tmp_path):
    with open(tmp_path / "f.mpk", "wb") as f:
        with pytest.raises(NotAModelPackError, match="readable and seekable"):
            api.load(f)
    with pytest.raises(TypeError, match="binary mode"):
        api.load(io.StringIO("x"))
    with pytest.raises(TypeError, match="expected a path, URL, bytes"):
        api.load(12.5)


# --------------------------------------------------------------------------- fsspec


def test_fsspec_memory_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/mp/one.mpk", api.save_bytes(_obj()))
    assert _same(api.load("memory://mp/one.mpk"), _obj())
    api.verify("memory://mp/one.mpk")
    assert inspect.describe("memory://mp/one.mpk")["tensor_count"] == 2
    api.save({"w": np.arange(4000, dtype=np.float32), "v": np.ones(4000)}, tmp_path / "s.mpk", max_shard_size=20000)
    for name in os.listdir(tmp_path):
        fs.pipe(f"/mp/{name}", (tmp_path / name).read_bytes())
    out = api.load("memory://mp/s.mpk")
    assert bits_equal(out["w"], np.arange(4000, dtype=np.float32))


# --------------------------------------------------------------------------- HTTP with Range


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET with ``Range: bytes=a-b`` or ``bytes=-n`` only; counts requests and bytes sent."""

    root: Path
    stats: dict

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if m is None:
            self.send_error(400, "this test server only answers range requests")
            return
        if m.group(1):
            start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
        else:
            start, end = max(0, size - int(m.group(2))), size - 1
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.stats["requests"] += 1
        self.stats["bytes"] += len(body)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    stats = {"requests": 0, "bytes": 0}
    handler = type("H", (_RangeHandler,), {"root": tmp_path, "stats": stats})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", stats
    finally:
        httpd.shutdown()
        httpd.server_close()


class _SparseFile(io.RawIOBase):
    """A writable file that seeks over big all-zero writes, so a 1 GiB pack costs no disk."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        if view.nbytes >= 1 << 20 and not np.frombuffer(view, np.uint8).any():
            self._f.seek(view.nbytes, os.SEEK_CUR)
        else:
            self._f.write(view)
        self._pos += view.nbytes
        return view.nbytes

    def close(self) -> None:
        self._f.truncate(self._pos)
        self._f.close()
        super().close()


def test_inspect_of_a_1gib_remote_pack_is_cheap(tmp_path, server):
    url, stats = server
    zeros = np.zeros(1 << 30, np.uint8)  # untouched zero pages: no memory until written
    obj = {f"layer{i}.weight": zeros[i << 22 : (i + 1) << 22].view(np.float32) for i in range(256)}
    with _SparseFile(tmp_path / "big.mpk") as f:
        api.save(obj, f)
    assert os.path.getsize(tmp_path / "big.mpk") > 1 << 30
    info = inspect.describe(f"{url}/big.mpk")
    assert info["tensor_count"] == 256 and info["tensor_bytes"] == 1 << 30
    print(f"inspect of a 1 GiB remote pack: {stats}")
    assert stats["requests"] <= 4 and stats["bytes"] < 1 << 20, stats
    with api.open(f"{url}/big.mpk") as pack:
        before = dict(stats)
        assert len(pack.keys()) == 256
        t = pack["layer3.weight"]
        assert t.shape == (1 << 20,) and not t.any()
        assert stats["requests"] - before["requests"] <= 3, stats  # the tail, the head, the tensor
        assert stats["bytes"] - before["bytes"] < (4 << 20) + (1 << 20), stats
    before = dict(stats)
    some = api.load(f"{url}/big.mpk", keys=["layer7.weight", "layer9.weight"])
    assert sorted(some) == ["layer7.weight", "layer9.weight"] and not some["layer9.weight"].any()
    assert stats["requests"] - before["requests"] <= 4, stats  # tail, head, two tensors
    assert stats["bytes"] - before["bytes"] < (8 << 20) + (1 << 20), stats
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        api.load(f"{url}/big.mpk", keys=["nope"])


def test_http_round_trip_split_and_verify(tmp_path, server):
    url, stats = server
    api.save(_obj(), tmp_path / "one.mpk")
    assert _same(api.load(f"{url}/one.mpk"), _obj())
    api.verify(f"{url}/one.mpk")
    obj = {f"t{i}": np.full(300, i, np.float32) for i in range(4)}
    api.save(obj, tmp_path / "s.mpk", max_shard_size=1300)
    out = api.load(f"{url}/s.mpk")
    assert all(bits_equal(out[k], v) for k, v in obj.items())
    with pytest.raises(FileNotFoundError):
        api.load(f"{url}/missing.mpk")


def test_remote_local_header_damage_is_caught_on_first_read(tmp_path, server):
    url, _ = server
    api.save({"a": np.zeros(10, np.float32), "b": np.ones(10, np.float32)}, tmp_path / "f.mpk")
    data = bytearray((tmp_path / "f.mpk").read_bytes())
    start = data.index(b"PK\x03\x04b.npy"[:4], data.index(b"a.npy") + 1)  # the local header of b.npy
    assert data[start + 30 : start + 35] == b"b.npy"
    data[start + 4] ^= 0x01  # "version needed" disagrees with the central directory
    (tmp_path / "f.mpk").write_bytes(bytes(data))
    with pytest.raises(FormatError):  # a local file checks every header when opened
        api.open(tmp_path / "f.mpk")
    with api.open(f"{url}/f.mpk") as pack:  # remote: checked when the member is first read
        assert not pack["a"].any()
        with pytest.raises(FormatError, match="local header disagrees"):
            pack["b"]
    with pytest.raises(FormatError, match="local header disagrees"):
        api.verify(f"{url}/f.mpk")
