"""The provisioner on a formed lab, for the lab tests and bench/provision.py: a managed network, the test guest as
an image, templates, a userdata document with a fresh SSH key and a profile, all made through `pvc`; then a VM's
address (its lease) and commands in it over SSH with that key, from the primary (the network's gateway).

The lab has no Internet, so the userdata cannot install a package from a mirror: it writes a page and starts a small
web server (Python's, which cloud-init brings) as a systemd unit."""

from __future__ import annotations

import base64
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.labctl import Lab
from tests.harness.labscenarios import primary

VNI, SUBNET, GATEWAY, RANGE = 200, "10.200.0.0/24", "10.200.0.1", ("10.200.0.100", "10.200.0.199")
PROFILE = "web"
NODE_KEY = "/root/.ssh/pvc-test-key"  # the private key, on every lab node
GUEST_TIMEOUT = 900  # a TCG boot inside the lab on a shared 2-core machine
USERDATA = """#cloud-config
ssh_authorized_keys:
  - {key}
write_files:
  - path: /srv/www/index.html
    content: "<h1>{{{{ vm_name }}}} says {{{{ greeting }}}}</h1>"
runcmd:
  - [systemd-run, --unit=pvc-web, python3, -m, http.server, "8080", --directory, /srv/www]
"""


def pvc_ok(lab: Lab, *args: str, timeout: float = 300) -> str:
    out = lab.pvc(*args, timeout=timeout)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


def make_profile(lab: Lab, qcow2: Path, work: Path, memory: str = "512M") -> float:
    """Everything `pvc vm create NAME --profile web` needs; the seconds `pvc image upload` took."""
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pvc-test", "-f", str(key)], check=True)
    encoded = base64.b64encode(key.read_bytes()).decode()
    for node in ("node1", "node2", "node3"):  # the primary may move: every node can log in
        lab.sh(node, f"mkdir -p /root/.ssh && umask 077 && echo {encoded} | base64 -d > {NODE_KEY}")
    pvc_ok(
        lab, "network", "add", str(VNI), "--name", "prov", "--type", "managed", "--subnet", SUBNET,
        "--gateway", GATEWAY, "--dhcp-start", RANGE[0], "--dhcp-end", RANGE[1], "--domain", "prov.pvc.test",
    )  # fmt: skip
    started = time.monotonic()
    pvc_ok(lab, "image", "upload", "guest", str(qcow2), "--pool", "vms", timeout=900)
    upload = time.monotonic() - started
    pvc_ok(lab, "provisioner", "template", "system", "add", "web", "--vcpus", "1", "--memory", memory,
           "--machine", "pc")  # fmt: skip
    pvc_ok(lab, "provisioner", "template", "network", "add", "prov", "--nic", str(VNI))
    pvc_ok(lab, "provisioner", "template", "storage", "add", "guest-4g", "--disk", "sda:pool=vms,size=4G,image=guest")
    userdata = work / "web.yaml"
    userdata.write_text(USERDATA.format(key=(work / "id_ed25519.pub").read_text().strip()))
    pvc_ok(lab, "provisioner", "userdata", "add", "web", str(userdata))
    pvc_ok(
        lab, "provisioner", "profile", "add", PROFILE, "--system-template", "web", "--network-template", "prov",
        "--storage-template", "guest-4g", "--userdata", "web", "--arg", "greeting=hello",
    )  # fmt: skip
    return upload


@dataclass
class Guest:
    """A VM made from the profile, reached over SSH from the primary."""

    lab: Lab
    name: str

    def mac(self) -> str:
        return str(self.lab.api_json("vm", "info", self.name)["definition"]["nics"][0]["mac"])

    def address(self) -> str:
        """Its address: its lease on the managed network, by its MAC."""
        mac = self.mac()

        def lease() -> str | None:
            found = [x for x in self.lab.api_json("network", "dhcp", "list", str(VNI)) if x["mac"] == mac]
            return found[0]["ip"] if found else None

        return self.lab.wait(f"{self.name}'s lease", lease, GUEST_TIMEOUT, interval=5)

    def ssh(self, command: str, timeout: float = 60, check: bool = True) -> str:
        return self.lab.sh(
            primary(self.lab),
            f"ssh -i {NODE_KEY} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            f"-o ConnectTimeout=10 root@{self.address()} {shlex.quote(command)}",
            timeout=timeout,
            check=check,
        )

    def wait_ssh(self, what: str = "SSH") -> str:
        """Once it answers SSH: its hostname."""

        def up() -> str | None:
            try:
                return self.ssh("hostname", timeout=30).strip() or None
            except AssertionError:
                return None

        return self.lab.wait(f"{self.name}'s {what}", up, GUEST_TIMEOUT, interval=5)
