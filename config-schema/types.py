"""Scalar types of cluster.toml: each parses one TOML value and says clearly what it accepts.

Every type here takes the value exactly as TOML gives it (a str, int, bool, ...) and either returns the parsed
value or raises ValueError with a message meant for an administrator. pydantic wraps these as field errors.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, WithJsonSchema

from pvc.config import pools, sizes

_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAC_PATTERN = r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$"  # six hex pairs, one separator throughout
_MAC_RE = re.compile(MAC_PATTERN)
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_TZ_RE = re.compile(r"^[A-Za-z0-9_+-]{1,32}(/[A-Za-z0-9_+-]{1,32}){0,2}$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def toml_type(value: Any) -> str:
    """The TOML name of a Python value produced by tomllib, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _need_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as a string, got {toml_type(value)}")
    return value


A = TypeVar("A", ipaddress.IPv4Address, ipaddress.IPv6Address)
N = TypeVar("N", ipaddress.IPv4Network, ipaddress.IPv6Network)


def _address(value: Any, kind: type[A], name: str, example: str) -> A:
    if isinstance(value, kind):
        return value
    text = _need_str(value, f'an {name} address like "{example}"')
    try:
        return kind(text)
    except ValueError:
        if "/" in text:
            raise ValueError(f"'{text}' has a prefix length; give the address alone, like \"{example}\"") from None
        raise ValueError(f"'{text}' is not an {name} address (expected like \"{example}\")") from None


def _network(value: Any, kind: type[N], name: str, example: str) -> N:
    if isinstance(value, kind):
        return value
    text = _need_str(value, f'an {name} subnet like "{example}"')
    if "/" not in text:
        raise ValueError(f"'{text}' has no prefix length (expected a subnet like \"{example}\")")
    try:
        return kind(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            net = kind(text, strict=False)
            raise ValueError(f"'{text}' has host bits set; the subnet is \"{net}\"") from None
        raise ValueError(f"'{text}' is not an {name} subnet (expected like \"{example}\")") from None


def parse_ipv4(value: Any) -> ipaddress.IPv4Address:
    return _address(value, ipaddress.IPv4Address, "IPv4", "10.0.0.1")


def parse_ipv4_network(value: Any) -> ipaddress.IPv4Network:
    return _network(value, ipaddress.IPv4Network, "IPv4", "10.0.0.0/24")


def parse_ipv6(value: Any) -> ipaddress.IPv6Address:
    return _address(value, ipaddress.IPv6Address, "IPv6", "2001:db8::1")


def parse_ipv6_network(value: Any) -> ipaddress.IPv6Network:
    return _network(value, ipaddress.IPv6Network, "IPv6", "2001:db8:100::/64")


def parse_mac(value: Any) -> str:
    text = _need_str(value, 'a MAC address like "52:54:00:12:34:56"').strip().lower()
    if not _MAC_RE.match(text):
        raise ValueError(f"'{value}' is not a MAC address (expected six hex pairs like \"52:54:00:12:34:56\")")
    text = text.replace("-", ":")
    first = int(text[:2], 16)
    if first & 1:
        raise ValueError(f"'{value}' is a multicast MAC address; a NIC's address has an even first octet")
    if text == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC address")
    return text


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string like "4G", "512MiB", "1.5T" (binary units)."""
    if isinstance(value, bool):
        raise ValueError('expected a size like "4G" or a number of bytes, got a boolean')
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a size must be positive, got {value}")
        return value
    text = _need_str(value, 'a size like "4G" or a number of bytes')
    size = sizes.parse_size(text)
    if size <= 0:
        raise ValueError(f"a size must be positive, got '{text}'")
    return size


def parse_hostname(value: Any) -> str:
    text = _need_str(value, "a host name")
    if not _HOSTNAME_RE.match(text):
        raise ValueError(
            f"'{text}' is not a valid node name (lower-case letters, digits and '-', 1-63 characters, "
            "not starting or ending with '-')"
        )
    return text


def parse_domain(value: Any) -> str:
    text = _need_str(value, 'a DNS domain like "pvc.example.com"')
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_DOMAIN_LABEL_RE.match(label) for label in labels):
        raise ValueError(
            f"'{text}' is not a DNS domain (lower-case labels separated by dots, like \"pvc.example.com\")"
        )
    return text.rstrip(".")


def parse_ifname(value: Any) -> str:
    text = _need_str(value, "a network interface name")
    if not _IFNAME_RE.match(text):
        raise ValueError(
            f"'{text}' is not a network interface name (1-15 characters of letters, digits, '_', '.', '-')"
        )
    return text


def parse_ssh_key(value: Any) -> str:
    text = _need_str(value, "an SSH public key line").strip()
    parts = text.split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES or not _B64_RE.match(parts[1]):
        raise ValueError(
            'not an SSH public key (expected a line like "ssh-ed25519 AAAA... comment"; key types: '
            + ", ".join(_SSH_KEY_TYPES)
            + ")"
        )
    return text


def parse_timezone(value: Any) -> str:
    text = _need_str(value, 'a time zone like "Europe/Berlin" or "UTC"')
    try:
        if not _TZ_RE.match(text):
            raise ValueError(text)
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f'\'{text}\' is not a known time zone (expected an IANA name like "Europe/Berlin" or "UTC")'
        ) from None
    return text


def parse_file_path(value: Any) -> str:
    text = _need_str(value, "a file path")
    if not text or "\0" in text or len(text) > 1024 or any(len(part) > 255 for part in text.split("/")):
        raise ValueError("not a usable file path (1-1024 characters, no NUL, each name at most 255 characters)")
    return text


def parse_asn(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an AS number as an integer, got {toml_type(value)}")
    if not 1 <= value <= 4294967294 or value in (23456, 65535):
        raise ValueError(
            f"AS number {value} is out of range (1-4294967294, excluding the reserved 23456 and 65535; "
            "private ranges are 64512-65534 and 4200000000-4294967294)"
        )
    return value


def _str_schema(pattern: str | None = None, **extra: Any) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", **extra}
    if pattern:
        schema["pattern"] = pattern
    return WithJsonSchema(schema)


IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(parse_ipv4), _str_schema(format="ipv4")]
IPv4Net = Annotated[ipaddress.IPv4Network, BeforeValidator(parse_ipv4_network), _str_schema(description="CIDR")]
IPv6 = Annotated[ipaddress.IPv6Address, BeforeValidator(parse_ipv6), _str_schema(format="ipv6")]
IPv6Net = Annotated[ipaddress.IPv6Network, BeforeValidator(parse_ipv6_network), _str_schema(description="CIDR")]
Mac = Annotated[str, BeforeValidator(parse_mac), _str_schema(MAC_PATTERN)]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": sizes.SIZE_RE.pattern}]}
    ),
]
Hostname = Annotated[str, BeforeValidator(parse_hostname), _str_schema(_HOSTNAME_RE.pattern)]
Domain = Annotated[str, BeforeValidator(parse_domain), _str_schema()]
IfName = Annotated[str, BeforeValidator(parse_ifname), _str_schema(_IFNAME_RE.pattern)]
SshKey = Annotated[str, BeforeValidator(parse_ssh_key), _str_schema()]
TimeZone = Annotated[str, BeforeValidator(parse_timezone), _str_schema()]
FilePath = Annotated[str, BeforeValidator(parse_file_path), _str_schema(description="relative to cluster.toml")]
Asn = Annotated[
    int, BeforeValidator(parse_asn), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 4294967294})
]
Mtu = Annotated[int, Field(ge=576, le=9216, description="bytes")]
PoolCopies = Annotated[int, Field(ge=pools.MIN_COPIES, le=pools.MAX_COPIES)]  # a pool's size or min_size
PoolPgs = Annotated[int, Field(ge=1, le=pools.MAX_PGS)]
Port = Annotated[int, Field(ge=1, le=65535)]
