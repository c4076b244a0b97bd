"""The ``sppdet`` command line: thin click commands over the library.

Commands are imported lazily (torch is slow to import), one module per command under
``sppdet.cli``; adding a command is one entry in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

import click

from sppdet import __version__
from sppdet.errors import SppdetError

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
    try:
        cli.main(args=argv, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; finished files are complete (atomic writes).
        click.echo("\nInterrupted: finished files are kept; run the same command again to resume.",
                   err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SppdetError as e:
        click.secho(f"Error: {e}", fg="red", err=True)
        sys.exit(1)
    except Exception as e:
        # The proposals package's errors carry a message for the user too (file and reason);
        # it is imported only by the commands that use it.
        errors = sys.modules.get("proposals.errors")
        if errors is None or not isinstance(e, errors.ProposalError):
            raise
        click.secho(f"Error: {e}", fg="red", err=True)
        sys.exit(1)
