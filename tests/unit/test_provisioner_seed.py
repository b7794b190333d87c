"""The cloud-init seed of `pvc vm create` (pure): placeholders, SSH keys, meta-data, network-config, the ISO; and
the create's plan from a profile's templates."""

from __future__ import annotations

import pytest
import yaml

from pvc.nodeos.provisioner import create, seed
from pvc.nodeos.provisioner.errors import Invalid
from pvc.nodeos.provisioner.models import (
    ImageView,
    NetworkTemplate,
    ProfileView,
    StorageTemplate,
    SystemTemplate,
    TemplateDisk,
    TemplateNic,
)
from pvc.nodeos.provisioner.userdata import classify

MiB = 1024**2
DOC = "#cloud-config\npackages: [{{ package }}]\nhostname: {{vm_name}}\n"


def test_placeholders_are_checked_as_words_and_filled_from_the_values():
    assert classify(DOC) == "cloud-config"  # `[{{ package }}]` would be a YAML mapping without this
    assert seed.placeholders(DOC) == ["package", "vm_name"]
    assert seed.substitute(DOC, {"package": "nginx", "vm_name": "web1"}) == (
        "#cloud-config\npackages: [nginx]\nhostname: web1\n"
    )
    with pytest.raises(seed.SeedError, match=r"\{\{ package \}\} but no value is given: add --arg package=VALUE"):
        seed.substitute(DOC, {"vm_name": "web1"})
    with pytest.raises(seed.SeedError, match=r"with the --arg values put in, .*not valid YAML"):
        seed.substitute(DOC, {"package": "a]: [", "vm_name": "web1"})


def test_ssh_keys_join_a_cloud_config_or_make_one():
    key = "ssh-ed25519 AAAA admin@lab"
    assert yaml.safe_load(seed.with_ssh_keys(None, [key])) == {"ssh_authorized_keys": [key]}
    merged = seed.with_ssh_keys("#cloud-config\nssh_authorized_keys: [old]\npackages: [htop]\n", [key])
    assert merged.startswith("#cloud-config\n")
    assert yaml.safe_load(merged) == {"ssh_authorized_keys": ["old", key], "packages": ["htop"]}
    multipart = (
        "Content-Type: multipart/mixed; boundary=B\nMIME-Version: 1.0\n\n--B\nContent-Type: text/plain\n\nx\n--B--\n"
    )
    with pytest.raises(seed.SeedError, match="#cloud-config user-data only"):
        seed.with_ssh_keys(multipart, [key])


def test_the_seed_iso_holds_the_three_documents_under_the_names_cloud_init_reads():
    files = {
        "meta-data": seed.yaml_text(seed.meta("0b5d", "web1", {"region": "lab"})),
        "user-data": "#cloud-config\n{}\n",
        "network-config": seed.network_config(["52:54:00:AA:00:01", "52:54:00:aa:00:02"]),
    }
    data = seed.iso(files)
    assert data[0x8001:0x8006] == b"CD001" and data[0x8028 : 0x8028 + 6] == b"cidata"  # the volume label
    assert seed.read_iso(data) == files
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "0b5d", "local-hostname": "web1", "region": "lab"}
    net = yaml.safe_load(files["network-config"])
    assert net["version"] == 2
    assert net["ethernets"]["eth1"] == {"match": {"macaddress": "52:54:00:aa:00:02"}, "set-name": "eth1", "dhcp4": True}
    assert seed.volume_size(data) == MiB


def _sources(disks: list[TemplateDisk], userdata: str | None = DOC) -> create.Sources:
    image = ImageView(
        name="deb", description="", pool="vms", volume="deb", snapshot="image", format="raw", size=2 * MiB, created=0
    )
    profile = ProfileView(name="web", system_template="s", created=0, updated=0, arguments={"package": "htop"})
    return create.Sources(
        profile,
        SystemTemplate(name="s", vcpus=2, memory_mib=512, node_limit=["n1"]),
        NetworkTemplate(name="n", nics=[TemplateNic(network=100)]),
        StorageTemplate(name="st", disks=disks),
        userdata,
        {"deb": image},
    )


def test_a_plan_from_a_profile_has_the_clones_the_seed_disk_and_the_template_fields():
    disks = [
        TemplateDisk(id="sda", pool="vms", image="deb", size=8 * MiB),
        TemplateDisk(id="sdb", pool="fast", size=MiB),
    ]
    p = create.plan(
        create.CreateRequest.model_validate({"name": "web1", "profile": "web", "arguments": {"package": "nginx"}}),
        _sources(disks),
    )
    d = p.definition
    assert [(x.volume, x.device, x.bus, x.read_only) for x in d.disks] == [
        ("vms/web1_sda", "disk", "virtio", False),
        ("fast/web1_sdb", "disk", "virtio", False),
        ("vms/web1_cidata", "disk", "virtio", True),  # read-only virtio: seen while only the initramfs's drivers run
    ]
    assert (d.vcpus, d.memory_mib, d.placement.node_limit, [n.network for n in d.nics]) == (2, 512, ["n1"], [100])
    assert [(x.name, x.size, x.image and x.image.name) for x in p.disks] == [
        ("web1_sda", 8 * MiB, "deb"),
        ("web1_sdb", MiB, None),
    ]
    assert p.user_data == "#cloud-config\npackages: [nginx]\nhostname: web1\n"  # --arg over the profile's default
    assert p.steps == 4 and p.seed_volume == "vms/web1_cidata"


@pytest.mark.parametrize(
    ("request_", "disks", "field", "words"),
    [
        ({"profile": "web"}, [], "storage_template", "makes no disks"),
        (
            {"profile": "web"},
            [TemplateDisk(id="sda", pool="vms", image="deb", size=MiB)],
            "disk_size",
            "smaller than image deb",
        ),
        (
            {"profile": "web", "arguments": {"package": "x\ny: ["}},
            [TemplateDisk(id="sda", pool="vms", size=MiB)],
            "arguments",
            "not valid YAML",
        ),
    ],
)
def test_plan_refusals_name_the_field(request_, disks, field, words):
    with pytest.raises(Invalid, match=words) as caught:
        create.plan(create.CreateRequest.model_validate({"name": "web1", **request_}), _sources(disks))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "a"}, "give a profile, or an image"),
        ({"name": "a", "profile": "p", "image": "i"}, "give a profile, or an image"),
        ({"name": "a", "image": "i"}, "memory_mib: give the VM's memory"),
        ({"name": "a", "profile": "p", "memory_mib": 512}, "memory_mib is for a create without a profile"),
        ({"name": "a", "profile": "p", "vcpus": 2}, "vcpus is for a create without a profile"),
    ],
)
def test_a_create_request_is_a_profile_or_an_image(body, words):
    with pytest.raises(ValueError, match=words):
        create.CreateRequest.model_validate(body)
