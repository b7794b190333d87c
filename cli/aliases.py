"""Other names of commands, in one table: the original PVC's names where ours differ, and old names of ours, so
that an administrator's habits and scripts carry over. An alias runs the very command it names (same options,
same output); `--help` lists it as "Alias of ...".
"""

from __future__ import annotations

import click

# group path (without `pvc`) -> {alias: the command it runs, as its whole path (without `pvc`)}
ALIASES: dict[str, dict[str, str]] = {
    "vm": {"console": "vm log"},
    "vm network": {"get": "vm network list"},
    "vm volume": {"get": "vm volume list"},
    "cluster": {"faults": "cluster fault list", "fault-clear": "cluster fault delete"},
    "storage volume": {"snapshot": "storage snapshot"},
}


def group_path(ctx: click.Context) -> str:
    """The group's path under the root command: `vm network` for `pvc vm network`."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


class AliasGroup(click.Group):
    """A group whose commands also answer to the names ALIASES gives them."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = ALIASES.get(group_path(ctx), {}).get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        command: click.Command | None = ctx.find_root().command
        for part in target.split():
            command = command.get_command(ctx, part) if isinstance(command, click.Group) else None
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *ALIASES.get(group_path(ctx), {})])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        aliases = ALIASES.get(group_path(ctx), {})
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in aliases:
                rows.append((name, f"Alias of `{aliases[name]}`."))
            elif (command := self.commands.get(name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
