"""The ``sppdet`` command line: thin click commands over the library.

Commands are imported lazily (torch is slow to import), one module per command under
``sppdet.cli``; adding a command is one entry in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from sppdet import __version__
from sppdet.errors import SppdetError

LOG_PROGRESS_INTERVAL_S = 30

# name -> "module:function", listed in pipeline order.
COMMANDS: dict[str, str] = {
    "data-stats": "sppdet.cli.data_stats:data_stats",
    "make-split": "sppdet.cli.make_split:make_split",
    "convert": "sppdet.cli.convert:convert",
    "proposals": "sppdet.cli.proposals:proposals_cmd",
    "extract": "sppdet.cli.extract:extract",
    "finetune": "sppdet.cli.finetune:finetune",
    "train-svm": "sppdet.cli.train_svm:train_svm",
    "eval": "sppdet.cli.eval:eval_cmd",
    "analyze": "sppdet.cli.analyze:analyze_cmd",
    "pack": "sppdet.cli.pack:pack",
    "detect": "sppdet.cli.detect:detect",
    "demo": "sppdet.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``sppdet --help``, from the commands' docstrings read as text:
        listing the commands imports none of them (nor torch)."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, short_help(target, limit)) for name, target in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def short_help(target: str, limit: int = 45) -> str:
    """The short help of command ``"module:function"``, from the function's docstring in
    the module's source (the module is not imported)."""
    import ast
    import importlib.util

    module, attr = target.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            # click's own shortening, as for an imported command with this docstring
            return click.Command(attr, help=ast.get_docstring(node) or "").get_short_help_str(limit)
    return ""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sppdet")
def cli() -> None:
    """SPP-net object detection: proposals, conv features with spatial pyramid pooling,
    SVMs with hard-negative mining, box regression, NMS and PASCAL VOC evaluation."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning library errors into one clear line."""
    if not sys.stderr.isatty():  # a log file: progress bars update at most every 30 s
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_PROGRESS_INTERVAL_S))
    try:
        cli.main(args=argv, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        if isinstance(e.__cause__ or e.__context__, EOFError):  # click's Abort for an EOFError
            _fail(f"a file ended unexpectedly (damaged or truncated): {e.__cause__ or e.__context__}")
        # click turns Ctrl-C into Abort; finished files are complete (atomic writes).
        click.echo("\nInterrupted: finished files are kept; run the same command again to resume.",
                   err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SppdetError as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - the user's data or machine, not a bug: one line
        message = _user_problem(e)
        if message is None:
            raise
        _fail(message)


def _fail(message: str) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(1)


def _user_problem(e: Exception) -> str | None:
    """One line for errors that come from the user's files or machine (None: a bug, which
    keeps its traceback)."""
    import errno
    import zipfile

    from proposals.errors import ProposalError

    if isinstance(e, ProposalError):
        return str(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk{f' writing {e.filename}' if e.filename else ''}; "
                f"finished files are kept: free some space and run the same command again")
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, UnicodeDecodeError):
        return f"a text file is not valid UTF-8 ({e}); save it as UTF-8"
    if isinstance(e, (zipfile.BadZipFile, EOFError)):
        return f"a damaged or truncated .npz file ({type(e).__name__}: {e})"
    return None
