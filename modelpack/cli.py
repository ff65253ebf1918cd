"""The ``modelpack`` command: validate, schema, verify, inspect, run, diff, convert, show.

``main(argv) -> int`` never lets a traceback reach the user: every
ModelPackError becomes one line ``modelpack: error: <where>: <message>``
(set MODELPACK_DEBUG=1 for the traceback). Exit codes: 0 ok, 1 the input is
invalid / differs, 2 usage error.
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

    return verify_report(ns.files, out=out)


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


@_command("convert")
def cmd_convert(ns: argparse.Namespace, out: TextIO) -> int:
    from .dcp import is_dcp_folder

    if is_dcp_folder(ns.src):
        return _convert_dcp(ns, out)
    from .errors import NotAModelPackError

    raise NotAModelPackError(
        "cannot convert: expected a distributed checkpoint folder (one holding metadata.mpk, as written by "
        "modelpack.dcp.MpkStorageWriter)", source=ns.src)


def _convert_dcp(ns: argparse.Namespace, out: TextIO) -> int:
    """A torch.distributed.checkpoint folder -> one .mpk, one tensor in memory at a time."""
    from .dcp import consolidate

    consolidate(ns.src, ns.out)
    out.write(f"{ns.out}: written from {ns.src}\n")
    return 0


@_command("show")
def cmd_show(ns: argparse.Namespace, out: TextIO) -> int:
    from .show import show_command

    return show_command(ns.file, ns.output, ns.format, ns.open, out=out)


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
    ve.add_argument("files", nargs="+", metavar="FILE",
                    help=".mpk files, or distributed checkpoint folders (every shard, the metadata, chunk coverage)")

    c = sub.add_parser("convert", help="turn a distributed checkpoint folder (DCP) into one .mpk")
    c.add_argument("src", metavar="SRC", help="a folder written through modelpack.dcp.MpkStorageWriter")
    c.add_argument("out", metavar="OUT", help="the .mpk to write (atomically)")

    i = sub.add_parser("inspect", help="show what a .mpk holds")
    i.add_argument("file", metavar="FILE", help="the .mpk file to describe")
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
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    out = out or sys.stdout
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        return _COMMANDS[ns.command](ns, out)
    except (ModelPackError, OSError) as e:
        if os.environ.get("MODELPACK_DEBUG"):
            raise
        from .inspect import error_text

        print(f"modelpack: error: {error_text(e)}", file=sys.stderr)
        return 1
