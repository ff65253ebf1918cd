"""Every CLI command escapes what it prints from a file (C0, C1, bidi, lone surrogates), and fails in one line.

One escaping function (``modelpack._text.printable``) sits at the CLI's output
stream, so this holds for ``validate``, ``verify``, ``inspect``, ``diff``,
``run`` and ``show`` alike, for keys, spec text, names and error messages.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from modelpack._text import printable
from modelpack.cli import main

from .guards import guarded, write
from .mpkcraft import mpk

# ESC sequences, CSI as one C1 character, a bidi override and isolate, a lone surrogate
EVIL = "\x1b[2J\x9b31m\u202egnp.exe\u2066x\u2069\udc80"
EVIL_YAML = '"\\e[2J\\x9b31m\\u202egnp.exe\\u2066x\\u2069"'  # YAML escapes (a raw one is refused)


def _run(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv), out=out)
    return code, out.getvalue() + err.getvalue()


def _clean(text: str) -> bool:
    return all(c.isprintable() or c == "\n" for c in text)


def test_printable_escapes_every_terminal_active_character() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x9b") == "\\x9b" and printable("\x7f") == "\\x7f"
    assert printable("\u202e\u202a\u2066\u2069\u200f") == "\\u202e\\u202a\\u2066\\u2069\\u200f"
    assert printable("\udc80") == "\\udc80" and printable("a\nb") == "a\\nb"
    assert printable("a\nb", keep="\n") == "a\nb" and printable("héllo ✓ 𝄞") == "héllo ✓ 𝄞"


def test_escaping_writer_covers_every_write_path() -> None:
    from modelpack._text import EscapingWriter

    target = io.StringIO()
    out = EscapingWriter(target)  # type: ignore[arg-type]
    out.write("a\x1b[2J\n")
    out.writelines(["\u202eb\n", "c\udc80\n"])
    print("d\x9b", file=out)  # type: ignore[arg-type]
    assert target.getvalue() == "a\\x1b[2J\n\\u202eb\nc\\udc80\nd\\x9b\n"


def _spec(name: str) -> bytes:
    return (f"modelpack: 1\ninputs: {{x: {{shape: [batch, 4]}}}}\nnodes:\n"
            f"  - {{name: fc, layer: Linear, args: {{in_features: 4, out_features: 2}}}}\n"
            f"  - {{name: {name}, op: relu, in: [fc]}}\noutputs: [{name}]\n").encode()


def test_validate_escapes_names_in_findings(tmp_path: Path) -> None:
    bad = _spec(EVIL_YAML).replace(b"op: relu", b"op: relux")
    path = tmp_path / "model.yaml"
    path.write_bytes(bad)
    with guarded(tmp_path):
        code, text = _run("validate", str(path))
    assert code == 1 and _clean(text), repr(text)
    assert "\\x1b[2J" in text and "\\u202e" in text


def test_diff_escapes_keys_metadata_and_spec_text(tmp_path: Path) -> None:
    a = write(tmp_path, mpk(tree={EVIL: {"$tensor": "a"}, "b": {"$tensor": "b"}}, metadata={EVIL: EVIL}).bytes(), "a.mpk")
    b = write(tmp_path, mpk(tree={EVIL: {"$tensor": "b"}, "b": {"$tensor": "a"}}, metadata={EVIL: "x"}).bytes(), "b.mpk")
    with guarded(tmp_path):
        code, text = _run("diff", str(a), str(b))
    assert code == 1 and _clean(text), repr(text)
    assert "\\u202e" in text and "\\udc80" in text


def test_diff_escapes_spec_text(tmp_path: Path) -> None:
    raw = EVIL[:-1].encode()
    a = write(tmp_path, mpk(spec=b"modelpack: 1\n# " + raw + b"\n").bytes(), "a.mpk")
    b = write(tmp_path, mpk(spec=b"modelpack: 1\n# other " + raw + b"\n").bytes(), "b.mpk")
    with guarded(tmp_path):
        code, text = _run("diff", str(a), str(b))
    assert code == 1 and _clean(text), repr(text)
    assert "\\x1b[2J" in text


def test_verify_escapes_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, mpk(manifest=lambda m: m["tensors"][0].update(name=EVIL + "\nOK")).bytes())
    with guarded(tmp_path):
        code, text = _run("verify", str(path))
    assert code == 1 and _clean(text), repr(text)
    assert len(text.splitlines()) == 1, text


def test_run_escapes_the_file_name(tmp_path: Path, torch_model_files: tuple[Path, Path]) -> None:
    a = torch_model_files[0].rename(tmp_path / f"{EVIL[:-1]}.mpk")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 4), np.float32))
    # not guarded: run writes its output file (the file is ours, only its name is hostile)
    code, text = _run("run", str(a), "--input", str(x), "--output", str(tmp_path / "y.npy"))
    assert code == 0 and _clean(text), repr(text)
    assert "\\x1b[2J" in text


@pytest.fixture
def torch_model_files(tmp_path: Path) -> tuple[Path, Path]:
    torch = pytest.importorskip("torch")
    import modelpack

    spec = _spec("out").decode()
    out = []
    for i, name in enumerate(("a.mpk", "b.mpk")):
        model = modelpack.build(spec if i == 0 else spec.replace("out_features: 2", "out_features: 3"))
        modelpack.export(model, tmp_path / name, (torch.zeros(3, 4),))
        out.append(tmp_path / name)
    return out[0], out[1]


HOSTILE = {
    "junk": b"PK\x03\x04" + EVIL.encode("utf-8", "surrogateescape") * 20,
    "truncated": mpk().bytes()[:-5],
    "name": mpk(manifest=lambda m: m["tensors"][0].update(name=EVIL)).bytes(),
    "tag": mpk(manifest=lambda m: m.update(tree={"$evil\x1b[2J\u202e": 1})).bytes(),
    "spec": mpk(spec=_spec("out").replace(b"op: relu", b'op: "relu\\e[2J\\u202e"')).bytes(),
}


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("command", ["validate", "verify", "inspect", "diff", "run", "show", "digest", "convert"])
def test_every_command_fails_in_one_escaped_line(tmp_path: Path, data: bytes, command: str) -> None:
    path = write(tmp_path, data)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 4), np.float32))
    argv = {"validate": [str(path)], "verify": [str(path)], "inspect": [str(path)], "diff": [str(path), str(path)],
            "run": [str(path), "--input", str(x), "--output", str(tmp_path / "y.npy")],
            "show": [str(path), "--format", "svg", "-o", str(tmp_path / "o.svg")], "digest": [str(path)],
            "convert": [str(path), str(tmp_path / "o.safetensors")]}[command]
    if command in ("diff", "digest", "convert") and data == HOSTILE["spec"]:
        pytest.skip("a structurally valid pack: these commands carry its spec text without validating it")
    with guarded(tmp_path):
        code, text = _run(command, *argv)
    assert code == 1, text
    assert "Traceback" not in text and _clean(text), repr(text)
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text
