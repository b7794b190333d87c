"""The node itself: hostname, /etc/hosts with every node, timezone and the administrators' accounts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pvc.config.schema import ClusterFile
from pvc.nodeos.formation.machinery import Context, run, write


def render_hosts(cfg: ClusterFile) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for n in cfg.nodes:
        if n.ip.cluster is not None:
            lines.append(f"{n.ip.cluster} {n.name}.{cfg.cluster.domain} {n.name}")
    return "\n".join(lines) + "\n"


def render_authorized_keys(keys: list[str]) -> str:
    return "\n".join(keys) + "\n"


def step(ctx: Context) -> str:
    cfg, node = ctx.cfg, ctx.node
    write("/etc/hostname", node.name + "\n")
    run("hostname", node.name)
    write("/etc/hosts", render_hosts(cfg))
    zone = Path("/usr/share/zoneinfo") / cfg.cluster.timezone
    if zone.exists():
        link = Path("/etc/localtime")
        if not link.is_symlink() or link.resolve() != zone.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(zone)
    if cfg.cluster.dns_servers:
        write("/etc/resolv.conf", "".join(f"nameserver {s}\n" for s in cfg.cluster.dns_servers))
    for user in cfg.users:
        if subprocess.run(["id", "-u", user.name], capture_output=True).returncode != 0:
            argv = ["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "adm"]
            if user.uid is not None:
                argv += ["--uid", str(user.uid)]
            run(*argv, user.name)
        home = Path("/home") / user.name
        write(home / ".ssh" / "authorized_keys", render_authorized_keys(list(user.ssh_keys)), 0o600)
        run("chown", "-R", f"{user.name}:", str(home / ".ssh"), check=False)
    return f"{node.name}, {len(cfg.users)} user(s)"
