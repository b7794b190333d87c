"""The node itself: hostname, /etc/hosts with every node, timezone, the administrators' accounts (and sudo for those
cluster.toml allows: the break-glass path), and the SSH host key kept on PVCDATA so that clients can pin it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pvc.config.schema import ClusterFile, User
from pvc.nodeos.boot import data
from pvc.nodeos.formation.machinery import Context, run, write

HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key")  # the one host key (image/rootfs/etc/ssh/sshd_config.d/pvc.conf)
KEPT_KEYS = data.MOUNT / "ssh"  # on PVCDATA: the same key at every boot (review M10)
SUDOERS = Path("/etc/sudoers.d")


def render_hosts(cfg: ClusterFile) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for n in cfg.nodes:
        if n.ip.cluster is not None:
            lines.append(f"{n.ip.cluster} {n.name}.{cfg.cluster.domain} {n.name}")
    return "\n".join(lines) + "\n"


def render_authorized_keys(keys: list[str]) -> str:
    return "\n".join(keys) + "\n"


def sudoers_name(user: str) -> str:
    return f"pvc-{user}"  # no '.' or '~': sudo skips such files in sudoers.d


def render_sudoers(user: User) -> str:
    """The user's sudo rule: anything, without a password (the [[users]] have none: SSH keys only)."""
    return f"# cluster.toml [[users]] {user.name}: sudo = true (docs/security.md, break-glass)\n{user.name} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def sudo_users(users: list[User], folder: Path = SUDOERS) -> int:
    """A sudoers.d file for each user with sudo = true, none for the others (a file PVC wrote for a user who lost it
    is removed). Returns how many may use sudo."""
    allowed = {sudoers_name(u.name): u for u in users if u.sudo}
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("pvc-*"):
        if old.name not in allowed:
            old.unlink()
    for name, user in allowed.items():
        write(folder / name, render_sudoers(user), 0o440)
    return len(allowed)


def keep_host_key(kept: Path = KEPT_KEYS, key: Path = HOST_KEY) -> str:
    """The node's SSH host key, the same at every boot: the first boot keeps the key sshd made (or makes one) on
    PVCDATA; every later boot puts the kept key back and has sshd load it. Returns what it did."""
    stored, stored_pub = kept / key.name, kept / f"{key.name}.pub"
    pub = key.with_name(f"{key.name}.pub")
    if stored.exists() and stored_pub.exists():
        changed = write(key, stored.read_text(), 0o600)
        changed |= write(pub, stored_pub.read_text(), 0o644)
        if changed and subprocess.run(["systemctl", "is-active", "--quiet", "ssh"]).returncode == 0:
            run("systemctl", "reload", "ssh")  # sshd loads host keys when it starts or reloads
        return "restored from PVCDATA" if changed else "kept"
    if not (key.exists() and pub.exists()):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    kept.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept.chmod(0o700)
    write(stored, key.read_text(), 0o600)
    write(stored_pub, pub.read_text(), 0o644)
    return "saved on PVCDATA"


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
    sudoers = sudo_users(cfg.users)
    host_key = keep_host_key()
    return f"{node.name}, {len(cfg.users)} user(s), {sudoers} with sudo, SSH host key {host_key}"
