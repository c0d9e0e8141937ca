"""The comments of the protos, read from the .proto files: what each RPC and each request field
documents (roles, caps), for the checks that hold the services to what their contracts say."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

PROTOS = Path(__file__).resolve().parents[2] / "protos"
_OPENS = re.compile(r"(message|oneof|enum|service)\s+(\w+)\s*\{")
_RPC = re.compile(r"rpc (\w+)\(")
_FIELD = re.compile(r"(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*\d+;")


@dataclass
class Comments:
    rpcs: dict[str, list[str]] = field(default_factory=dict)  # full method name -> comment lines
    fields: dict[tuple[str, str], str] = field(default_factory=dict)  # (message, field) -> comment


@cache
def proto_comments() -> Comments:
    """The comment right above every RPC and every message field of the Quanyu protos."""
    found = Comments()
    for path in sorted(PROTOS.glob("quanyu/*/v1/*.proto")):
        text = path.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        blocks: list[tuple[str, str]] = []  # (kind, name) of the blocks the line is in
        pending: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("//"):
                pending.append(line[2:].strip())
                continue
            opened = _OPENS.match(line)
            rpc = _RPC.match(line)
            declared = _FIELD.match(line)
            messages = [name for kind, name in blocks if kind == "message"]
            services = [name for kind, name in blocks if kind == "service"]
            if opened:
                blocks.append((opened[1], opened[2]))
            elif line.startswith("}"):
                blocks.pop()
            elif rpc and services and package:
                found.rpcs[f"/{package[1]}.{services[-1]}/{rpc[1]}"] = pending
            elif declared and messages:
                found.fields[(messages[-1], declared[1])] = " ".join(pending)
            pending = []
    return found
