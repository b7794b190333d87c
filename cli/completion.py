"""`pvc completion SHELL`: the shell completion script, to load from the shell's startup file."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(pvc completion bash)"     in ~/.bashrc
    zsh:   eval "$(pvc completion zsh)"      in ~/.zshrc
    fish:  pvc completion fish | source      in ~/.config/fish/config.fish

    The same script comes from Click directly: _PVC_COMPLETE=bash_source pvc. VM, node and connection names
    complete too (asked from the API).
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    root = ctx.find_root()
    click.echo(cls(root.command, {}, "pvc", "_PVC_COMPLETE").source())
