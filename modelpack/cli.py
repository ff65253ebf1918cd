"""The ``modelpack`` command: validate, schema, verify, inspect, run, diff, show, convert, digest, sign.

``main(argv) -> int`` never lets a traceback reach the user: every
ModelPackError becomes one line ``modelpack: error: <where>: <message>``
(set MODELPACK_DEBUG=1 for the traceback). Exit codes: 0 ok, 1 the input is
invalid / differs, 2 usage error, 3 a bug (any other exception, also one line).
Everything written goes through one escaping function (``_text.printable``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .errors import ModelPackError

__all__ = ["main"]

Command = Callable[[argparse.Namespace, TextIO], int]
_COMMANDS: dict[str, Command] = {}


def _command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


# --------------------------------------------------------------------------- validate / schema


@_command("validate")
def cmd_validate(ns: argparse.Namespace, out: TextIO) -> int:
    from .spec.report import validate_paths

    if not ns.shapes:
        return validate_paths(ns.paths, fmt=ns.format, out=out)
    from .checks import torch_shape_checker

    return validate_paths(ns.paths, shapes=torch_shape_checker, fmt=ns.format, out=out)


@_command("schema")
def cmd_schema(ns: argparse.Namespace, out: TextIO) -> int:
    from .spec.schema import schema_text

    out.write(schema_text())
    return 0


# --------------------------------------------------------------------------- verify / inspect


@_command("verify")
def cmd_verify(ns: argparse.Namespace, out: TextIO) -> int:
    from .inspect import verify_report

    if (ns.signature is None) != (ns.public_key is None):
        print("modelpack verify: error: --signature and --public-key go together", file=sys.stderr)
        return 2
    status = verify_report(ns.files, out=out)
    if ns.signature is None or status:
        return status
    from .sign import verify_signature

    for path in ns.files:
        digest = verify_signature(path, ns.signature, ns.public_key)
        out.write(f"{path}: signature OK ({digest})\n")
    return 0


@_command("sign")
def cmd_sign(ns: argparse.Namespace, out: TextIO) -> int:
    from .sign import sign

    password = os.environ.get("MODELPACK_KEY_PASSWORD")
    written = sign(ns.file, ns.key, ns.output, password=password)
    out.write(f"wrote {written}\n")
    return 0


@_command("inspect")
def cmd_inspect(ns: argparse.Namespace, out: TextIO) -> int:
    from .inspect import inspect_report

    return inspect_report(ns.file, as_json=ns.json, out=out)


# --------------------------------------------------------------------------- run / diff


@_command("run")
def cmd_run(ns: argparse.Namespace, out: TextIO) -> int:
    from .torch.run import run_command

    return run_command(ns.file, ns.input, ns.output, out=out)


@_command("diff")
def cmd_diff(ns: argparse.Namespace, out: TextIO) -> int:
    from .diff import diff_report

    return diff_report(ns.a, ns.b, atol=ns.atol, out=out)


def _version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelpack")
    except PackageNotFoundError:
        from . import __version__

        return __version__


class _Version(argparse.Action):
    """``--version``: looked up only when asked (reading package metadata is no business of other commands)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


# --------------------------------------------------------------------------- convert


def _convert_dcp(ns: argparse.Namespace, out: TextIO) -> int:
    """A torch.distributed.checkpoint folder -> one .mpk (or a split pack), one tensor in memory at most."""
    from .dcp import consolidate

    if ns.sha256:
        from .errors import UnsupportedObjectError

        raise UnsupportedObjectError("--sha256 is not available for a distributed checkpoint folder: its tensor "
                                     "bytes are copied file to file, never read; `modelpack digest` hashes the result")
    consolidate(ns.src, ns.dst, max_shard_size=ns.max_shard_size)
    out.write(f"{ns.dst}: written from {ns.src}\n")
    return 0


@_command("show")
def cmd_show(ns: argparse.Namespace, out: TextIO) -> int:
    from .show import show_command

    return show_command(ns.file, ns.output, ns.format, ns.open, out=out)


@_command("convert")
def cmd_convert(ns: argparse.Namespace, out: TextIO) -> int:
    """Every SRC/DST pair goes through this one dispatch (modelpack.converters.convert); DCP folders consolidate."""
    from .dcp import is_dcp_folder

    if is_dcp_folder(ns.src):
        return _convert_dcp(ns, out)
    if ns.max_shard_size is not None:
        from .errors import UnsupportedObjectError

        raise UnsupportedObjectError("--max-shard-size applies to a distributed checkpoint folder as SRC; "
                                     "for other sources, modelpack.save(..., max_shard_size=) splits a pack")
    from .converters import convert

    convert(ns.src, ns.dst, src_format=ns.src_format, dst_format=ns.dst_format, sha256=ns.sha256)
    print(f"wrote {ns.dst}", file=out)
    return 0


@_command("digest")
def cmd_digest(ns: argparse.Namespace, out: TextIO) -> int:
    from .digests import digest_report

    return digest_report(ns.files, parts=ns.parts, out=out)


def _add_convert_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from .converters import FORMATS

    c = sub.add_parser("convert", help="convert between .mpk and safetensors, torch state dicts, HF folders, ONNX")
    c.add_argument("src", metavar="SRC", help="file or folder to read (format from its extension or contents; a DCP checkpoint folder too)")
    c.add_argument("dst", metavar="DST", help="file (or folder, for sharded safetensors) to write")
    c.add_argument("--from", dest="src_format", choices=FORMATS, help="SRC's format, when its name does not say")
    c.add_argument("--to", dest="dst_format", choices=FORMATS, help="DST's format, when its name does not say")
    c.add_argument("--sha256", action="store_true", help="record per-tensor SHA-256 in a .mpk output")
    c.add_argument("--max-shard-size", metavar="SIZE",
                   help="DCP folder only: write a split pack (DST is the index) whose shards stay under SIZE "
                        "(bytes, or '500MB', '2GB', '1GiB')")

    s = sub.add_parser("sign", help="sign a .mpk's content digest (OpenSSF model-signing bundle; extra 'sign')")
    s.add_argument("file", metavar="FILE", help="the .mpk file to sign")
    s.add_argument("--key", required=True, metavar="KEY",
                   help="EC private key (PEM); its password, if any, from $MODELPACK_KEY_PASSWORD")
    s.add_argument("-o", "--output", metavar="SIG", help="where to write the bundle (default: FILE.sig)")

    g = sub.add_parser("digest", help="print one content digest per .mpk (stable across member order)")
    g.add_argument("files", nargs="+", metavar="FILE", help=".mpk files")
    g.add_argument("--parts", action="store_true", help="also print the digest of each part (spec, tensors...)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelpack", description="Ship a PyTorch model as one safe file.")
    p.add_argument("--version", action=_Version, nargs=0, help="print modelpack's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do; COMMAND --help for more")

    v = sub.add_parser("validate", help="validate spec files (.yaml) and the specs inside .mpk files")
    v.add_argument("paths", nargs="+", metavar="PATH",
                   help="spec files (.yaml, .yml, .json), .mpk files, or folders searched for them")
    v.add_argument("--shapes", action=argparse.BooleanOptionalAction, default=False,
                   help="also propagate shapes (needs torch)")
    v.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: one line per finding, like a linter (default); json: one list of findings")

    sub.add_parser("schema", help="print the JSON Schema of the spec language")

    ve = sub.add_parser("verify", help="recompute checksums and check structure, spec and weights")
    ve.add_argument("files", nargs="+", metavar="FILE", help=".mpk files, or distributed checkpoint folders (every shard, the metadata, chunk coverage)")
    ve.add_argument("--signature", metavar="SIG", help="also check this model-signing bundle (with --public-key)")
    ve.add_argument("--public-key", metavar="PUB", help="the signer's EC public key (PEM)")

    i = sub.add_parser("inspect", help="show what a .mpk, or a distributed checkpoint folder, holds")
    i.add_argument("file", metavar="FILE", help="the .mpk file (or DCP checkpoint folder) to describe")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    r = sub.add_parser("run", help="run a packed model on .npy inputs")
    r.add_argument("file", metavar="FILE", help="a .mpk file holding a model")
    r.add_argument("--input", action="append", required=True, metavar="[NAME=]X.npy",
                   help="an input array (.npy, or .npz for several by name); NAME= binds it to that input, a plain "
                        "file fills the next unbound input in declared order; repeat for several")
    r.add_argument("--output", required=True, metavar="OUT.npy",
                   help="where to write the output (.npy for one output, .npz for several)")

    d = sub.add_parser("diff", help="compare two .mpk files: spec, metadata, values and tensors")
    d.add_argument("a", metavar="A", help="the first .mpk file")
    d.add_argument("b", metavar="B", help="the second .mpk file")
    d.add_argument("--atol", type=float, default=0.0, help="tolerated max abs difference per tensor")

    sh = sub.add_parser("show", help="draw the model: an interactive offline HTML page, or SVG/PNG")
    sh.add_argument("file", metavar="FILE", help=".mpk or spec (.yaml/.yml/.json)")
    sh.add_argument("-o", "--output", metavar="OUT", help="where to write (default: FILE's name + .html/.svg/.png)")
    sh.add_argument("--format", choices=["html", "svg", "png"], default="html",
                    help="html: interactive page (default); svg: static top level, no browser; png: via chromium")
    sh.add_argument("--open", action="store_true", help="open the result in the default browser")
    _add_convert_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    from ._text import EscapingWriter

    out = EscapingWriter(out or sys.stdout)  # every string printed, from a file or not, is escaped here
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        return _COMMANDS[ns.command](ns, out)  # type: ignore[arg-type]
    except (ModelPackError, OSError) as e:
        if os.environ.get("MODELPACK_DEBUG"):
            raise
        from .inspect import error_text

        _error_line(error_text(e))
        return 1
    except Exception as e:  # a bug: still one line, never a traceback (MODELPACK_DEBUG=1 shows it)
        if os.environ.get("MODELPACK_DEBUG"):
            raise
        _error_line(f"internal error ({type(e).__name__}: {e}); this is a bug in modelpack, please report it "
                    "with the traceback that MODELPACK_DEBUG=1 prints")
        return 3


def _error_line(text: str) -> None:
    """The one line a failure prints on stderr: escaped whole (a message may quote the file, newlines too)."""
    from ._text import printable

    print(f"modelpack: error: {printable(text)}", file=sys.stderr)
