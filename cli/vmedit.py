"""`pvc vm modify VM` without a file: the VM's typed definition as YAML in $EDITOR, like `kubectl edit`.

Saved unchanged (or the editor quits without saving): nothing happens. A document that does not parse, or that the
API refuses (a bad field, memory no node has, a volume of another VM, ...), re-opens in the editor with the reason
in a comment at the top, until it is accepted or the administrator answers no: then nothing is changed.
"""

from __future__ import annotations

import click

from pvc.cli.client import ApiError, Client, Unreachable, path
from pvc.cli.errors import Failure
from pvc.cli.vmdefine import from_file

HEADER = (
    "# Edit the definition of VM '{name}' and save to apply it; quit without saving, or save it unchanged, to leave\n"
    "# it as it is. NICs and disks added or removed are plugged in or out of a running VM; other changes apply at its\n"
    "# next start. The name and UUID stay (pvc vm rename renames).\n"
)
ERROR_MARK = "# error: "


def document(v: dict) -> str:
    """The text the editor opens: the header and the definition as YAML, in the definition's field order."""
    import yaml

    return HEADER.format(name=v["name"]) + yaml.safe_dump(v["definition"], sort_keys=False, allow_unicode=True)


def with_error(text: str, message: str) -> str:
    """`text` with `message` as the comment above it (instead of an earlier error)."""
    kept = [line for line in text.splitlines(keepends=True) if not line.startswith(ERROR_MARK)]
    shown = "".join(f"{ERROR_MARK}{line}\n" for line in message.splitlines() or [""])
    return shown + "".join(kept)


def edit(client: Client, vm: str) -> dict | None:
    """Edit VM's definition until the API takes it (returns the VM) or the administrator gives up (Failure); None
    when nothing was changed."""
    v = client.get(path("vms", vm))
    if v["definition"] is None:
        refused = "; ".join(f"{r['path']}: {r['message']}" for r in v["refused"])
        raise Failure(
            f"VM '{v['name']}' has no definition to edit ({refused}): give a corrected one with --file "
            f"(pvc vm dump {v['name']} shows the XML it was defined with)"
        )
    original = text = document(v)
    while True:
        edited = click.edit(text, extension=".yaml", require_save=True)
        if edited is None or _body_of(edited) == _body_of(original):
            return None
        try:
            return client.put(path("vms", v["uuid"]), from_file("the edited definition", edited))
        except Unreachable:
            raise
        except (ApiError, Failure) as exc:
            message = exc.message.removeprefix("pvc: ")
        click.echo(f"pvc: {message}", err=True)
        if not click.confirm("Edit it again?", default=True, err=True):
            raise Failure(f"VM '{v['name']}' not changed: {message}")
        text = with_error(edited, message)


def _body_of(text: str) -> str:
    """The text without comment lines: what an edit changed, if anything."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#")).strip()


def when(v: dict) -> str:
    """When a changed definition takes effect, from the VM's answer."""
    if v["running"] != "running":
        return f"it is {v['running']}, so the new definition applies when it starts"
    pending = v.get("pending") or []
    if pending:
        return "these wait for its next start: " + "; ".join(pending)
    return "devices added or removed are plugged in or out of the running VM; the rest applies at its next start"
