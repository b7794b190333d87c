"""What a user-data document is: a `#cloud-config` YAML mapping, or a MIME multipart message that cloud-init
splits into parts. Anything else is refused with what is accepted, so a typo never reaches a booting guest.

A document may hold `{{ name }}` placeholders, which `pvc vm create` fills from its --arg values; they are checked
here as if each were a plain word (`packages: [{{ package }}]` is a list of one package).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from email.message import Message
from typing import Literal

import yaml

Kind = Literal["cloud-config", "multipart"]
CLOUD_CONFIG = "#cloud-config"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ACCEPTED = (
    "user-data is accepted as a '#cloud-config' YAML document (its first line is #cloud-config, the rest a "
    "mapping) or a MIME multipart message (starting with its headers, Content-Type: multipart/mixed; boundary=...)"
)


class NotUserdata(ValueError):
    pass


def classify(body: str) -> Kind:
    """The document's kind; NotUserdata saying what is wrong (with the line for YAML) otherwise."""
    text = PLACEHOLDER.sub(lambda m: m.group(1), body.removeprefix("\ufeff"))
    first = text.split("\n", 1)[0].rstrip("\r").rstrip()
    if first == CLOUD_CONFIG:
        check_cloud_config(text, "the document")
        return "cloud-config"
    if first.lower().startswith(("content-type:", "mime-version:")):
        check_multipart(text)
        return "multipart"
    raise NotUserdata(f"{ACCEPTED}; this one starts with {first[:40]!r}")


def check_cloud_config(text: str, where: str) -> None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NotUserdata(f"{where} is not valid YAML{at}: {problem}") from None
    if doc is not None and not isinstance(doc, dict):
        raise NotUserdata(f"{where} is YAML but not a mapping (cloud-config is keys and values, like 'packages:')")


def check_multipart(text: str) -> None:
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text)
    if msg.get_content_maintype() != "multipart":
        raise NotUserdata(f"the MIME message is {msg.get_content_type()}, not multipart ({ACCEPTED})")
    if msg.defects:
        raise NotUserdata(f"the MIME multipart message is malformed: {_defect(msg)}")
    parts = msg.get_payload()
    if not msg.is_multipart() or not isinstance(parts, list) or not parts:
        raise NotUserdata("the MIME multipart message has no parts")
    for i, part in enumerate(parts, 1):
        if not isinstance(part, Message):
            raise NotUserdata(f"part {i} of the MIME multipart message is not a MIME part")
        if part.defects:
            raise NotUserdata(f"part {i} of the MIME multipart message is malformed: {_defect(part)}")
        payload = part.get_payload(decode=True)
        text_part = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
        if part.get_content_type() == "text/cloud-config" or text_part.startswith(CLOUD_CONFIG):
            check_cloud_config(text_part, f"part {i} (cloud-config)")


def _defect(msg: Message) -> str:
    names = {
        "StartBoundaryNotFoundDefect": "its boundary never appears in the body",
        "CloseBoundaryNotFoundDefect": "it has no closing boundary (--BOUNDARY--)",
        "NoBoundaryInMultipartDefect": "its Content-Type has no boundary=",
        "MultipartInvariantViolationDefect": "its parts do not follow the multipart rules",
    }
    defect = msg.defects[0]
    return names.get(type(defect).__name__, type(defect).__name__)
