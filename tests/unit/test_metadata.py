"""The metadata service's answers (pvc.nodeos.clientnet.metadata): path + calling VM -> document, pure."""

from __future__ import annotations

import pytest
import yaml

from pvc.nodeos.clientnet import metadata
from pvc.nodeos.clientnet.metadata import Instance, answer
from pvc.nodeos.state.models import VmSeed

UUID = "6f1c2a9e-0b5d-4c1e-9a57-3d2f8e4b7c10"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA admin@desk"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"
SEED = VmSeed(
    meta_data={"instance-id": UUID, "local-hostname": "web1-old", "zone": "rack2", "public-keys": [KEY_A, KEY_B]},
    user_data="#cloud-config\nruncmd: [touch /ok]\n",
    network_config="version: 2\n",
    profile="web",
)
WEB1 = Instance(uuid=UUID, name="web1", local_ipv4="10.100.0.50", seed=SEED)
BARE = Instance(uuid=UUID, name="plain", local_ipv4="10.100.0.51", seed=None)  # defined from XML: no seed


@pytest.mark.parametrize("version", ["latest", "2009-04-04", "2021-03-23"])
def test_ec2_meta_data_for_every_version_cloud_init_asks(version):
    listing = answer(f"/{version}/meta-data/", WEB1)
    assert listing.status == 200
    assert listing.body.splitlines() == [
        "hostname",
        "instance-id",
        "local-hostname",
        "local-ipv4",
        "name",
        "profile",
        "public-keys/",
        "zone",
    ]
    values = {
        "instance-id": UUID,
        "hostname": "web1",
        "local-hostname": "web1",  # the VM's name now, not the one in the seed
        "name": "web1",
        "local-ipv4": "10.100.0.50",
        "profile": "web",
        "zone": "rack2",
    }
    for key, value in values.items():
        got = answer(f"/{version}/meta-data/{key}", WEB1)
        assert (got.status, got.body) == (200, value), key
    assert answer(f"/{version}/meta-data", WEB1).body == listing.body
    assert answer(f"/{version}/", WEB1).body == "meta-data\nuser-data\n"
    assert answer(f"/{version}/user-data", WEB1).body == SEED.user_data


def test_public_keys_in_the_ec2_layout_cloud_init_crawls():
    assert answer("/latest/meta-data/public-keys/", WEB1).body == "0=admin@desk\n1=key1\n"
    assert answer("/latest/meta-data/public-keys/0/", WEB1).body == "openssh-key\n"
    assert answer("/latest/meta-data/public-keys/1/openssh-key", WEB1).body == KEY_B
    assert metadata.public_keys({"public-keys": {"a": KEY_A, "b": [KEY_B, " "]}}) == [KEY_A, KEY_B]
    assert metadata.public_keys({"public-keys": KEY_A}) == [KEY_A]
    assert metadata.public_keys({}) == []


def test_nocloud_net_documents():
    meta = yaml.safe_load(answer("/nocloud/meta-data", WEB1).body)
    assert meta["instance-id"] == UUID and meta["local-hostname"] == "web1" and meta["zone"] == "rack2"
    assert answer("/nocloud/user-data", WEB1).body == SEED.user_data
    assert (answer("/nocloud/vendor-data", WEB1).status, answer("/nocloud/vendor-data", WEB1).body) == (200, "")
    assert answer("/nocloud/network-config", WEB1).body == "version: 2\n"
    assert answer("/nocloud/meta-data?x=1", WEB1).status == 200


def test_a_vm_without_a_seed_has_its_identity_and_no_user_data():
    assert answer("/latest/meta-data/hostname", BARE).body == "plain"
    assert answer("/latest/meta-data/instance-id", BARE).body == UUID
    assert answer("/latest/", BARE).body == "meta-data\n"
    assert answer("/latest/user-data", BARE).status == 404  # as EC2: cloud-init reads it as none
    assert answer("/latest/meta-data/profile", BARE).status == 404
    assert answer("/nocloud/user-data", BARE).body == ""
    assert answer("/nocloud/network-config", BARE).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/nothing",
        "/latest/meta-data/hostname/more",
        "/latest/meta-data/public-keys/2/openssh-key",
        "/v1/meta-data/hostname",
        "/latest/api/token",
        "/nocloud/",
        "/nocloud/other",
        "/nocloud/meta-data/",
        "/../../etc/passwd",
    ],
)
def test_unknown_paths_are_404(path):
    assert answer(path, WEB1).status == 404


@pytest.mark.parametrize("path", ["/", "/latest/meta-data/hostname", "/latest/user-data", "/nocloud/meta-data"])
def test_an_unknown_caller_gets_404_everywhere(path):
    assert answer(path, None) == metadata.NOT_FOUND
