"""The signature as a smart-home firewall device profile (../shared/PROFILE-FORMAT.md),
and a checker for that format: the firewall's translator skips what it does not know
without a word, so we check our own output."""

from __future__ import annotations

import ipaddress
import re

import pandas as pd
import yaml

from . import fields as app_fields
from .signature import c_safe

# Protocols and fields the firewall's translator reads.
KNOWN_FIELDS = {
    "ipv4": {"src", "dst"},
    "ipv6": {"src", "dst"},
    "tcp": {"src-port", "dst-port"},
    "udp": {"src-port", "dst-port"},
    "dns": {"qtype", "domain-name", "response"},
    "mdns": {"qtype", "domain-name", "response"},
    "http": {"method", "uri", "response"},
    "coap": {"type", "method", "uri"},
    "dhcp": {"type", "client-mac"},
    "ssdp": {"method", "response"},
    "igmp": {"version", "type", "group"},
    "arp": {"type", "sha", "tha", "spa", "tpa"},
    "icmp": {"type"},
    "icmpv6": {"type"},
    "mqtt": set(),
    "tls": set(),
}
# Sections that name an application (a DNS name, an HTTP URI ...): a policy with one of
# them is narrow even without a port.
APPLICATION_SECTIONS = {"dns", "mdns", "http", "coap", "dhcp", "ssdp", "mqtt", "tls"}
POLICY_KEYS = {"protocols", "bidirectional", "initiator", "timeout", "stats"}
STATS_KEYS = {"rate", "packet-size", "packet-count", "duration"}
# The values of the packets' vocabularies (fields.py) that the firewall knows.
COAP_TYPES = set(app_fields.COAP_TYPES.values())
COAP_METHODS = {app_fields.COAP_METHODS[code] for code in "1234"}
DHCP_TYPES = {app_fields.DHCP_TYPES[str(code)] for code in range(1, 9)}
ARP_TYPES = {app_fields.ARP_OPCODES[code] for code in "12"}
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MULTICAST_ALIASES = {"224.0.0.251": "mdns", "239.255.255.250": "ssdp", "224.0.1.187": "coap"}
CLASS_ALIASES = {"gateway", "local", "external", "broadcast"}
# Every string the translator reads as an address alias rather than a domain name.
ADDRESS_ALIASES = {
    "self",
    "gateway",
    "local",
    "external",
    "broadcast",
    "udp-broadcast",
    "phone",
    "all",
    "mdns",
    "ssdp",
    "coap",
    "igmpv3",
    "default",
    "gateway-local",
}
# The translator pastes names, URIs and methods into C string literals and code unescaped:
# a quote, a backslash or a control character would change the code it generates.
UNSAFE_CHARS = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # a DNS qtype or an HTTP/SSDP method
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def build_profile(signature) -> dict:
    """The profile as plain dicts, in the order the firewall wants it."""
    info = {"name": _c_name(signature.device_name) or "device"}
    if signature.device_mac:
        info["mac"] = signature.device_mac
    family = "ipv6" if ":" in signature.device_ip else "ipv4"
    info[family] = signature.device_ip
    profile = {"device-info": info}
    background = {
        row.pattern: policy(row, family) for row in signature.background_patterns.itertuples()
    }
    background = {k: v for k, v in background.items() if v}
    if background:
        profile["single-policies"] = background
    interactions = {}
    name = _c_name(signature.event) or "event"
    for variant, rows in signature.event_patterns.groupby("variant", sort=True):
        event = {row.pattern: policy(row, family) for row in rows.itertuples()}
        event = {k: v for k, v in event.items() if v}
        if event:  # a route of its own (see signature.extract): an interaction of its own
            interactions[name if variant == 1 else f"{name}-variant-{variant}"] = event
    if interactions:
        profile["interactions"] = interactions
    return profile


def dump_profile(profile: dict, header: str = "") -> str:
    comment = "".join(f"# {printable(line)}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(
        profile, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000
    )


def _unaddressed(row) -> bool:
    """A DHCP DISCOVER to broadcast (with its REQUEST): the device has no address yet and
    sends from 0.0.0.0, which a rule on its own address ('self') would never match."""
    types = _items(getattr(row, "dhcp_msg_type", ""))
    return (
        "discover" in types and row.remote_class == "broadcast" and _family(row, "ipv4") == "ipv4"
    )


def policy(row, family: str) -> dict | None:
    """One pattern -> one policy, oriented originator (src) -> responder (dst); None when
    the format cannot express it (`unexpressible` says why)."""
    if unexpressible(row):
        return None
    protocols = {}
    application = _application(row)
    if application:
        protocols.update(application)
    proto = row.proto
    if proto in ("tcp", "udp") and not pd.isna(row.server_port):
        port_field = "src-port" if _server_is_orig(row) else "dst-port"
        protocols[proto] = {port_field: int(row.server_port)}
    elif proto in ("icmp", "icmpv6", "igmp") and proto not in protocols:
        protocols[proto] = (
            {"type": int(row.icmp_type)} if proto != "igmp" and str(row.icmp_type).isdigit() else {}
        )
    if proto != "arp":
        remote = _address_value(row)
        ends = ("self", remote) if row.device_side == "orig" else (remote, "self")
        if row.device_side == "orig" and _unaddressed(row):
            ends = ("0.0.0.0", remote)
        remote_family = _family(row, family)
        protocols[remote_family] = {"src": ends[0], "dst": ends[1]}
    result = {"protocols": {k: v for k, v in protocols.items() if v is not None}}
    for name, fields in result["protocols"].items():
        if fields == {}:
            result["protocols"][name] = {}
    if _bidirectional(row):
        result["bidirectional"] = True
    if proto == "tcp":
        result["initiator"] = "src"
    stats = _stats(row)
    if stats:
        result["stats"] = stats
    return result


def unexpressible(row) -> str:
    """Why a pattern cannot become a firewall policy, or "" when it can. Values come from
    packets: a name the firewall cannot match safely is left out rather than written."""
    if row.proto not in ("tcp", "udp", "arp", "icmp", "icmpv6", "igmp"):
        return f"the profile format has no section for {row.proto} frames"
    if row.proto in ("tcp", "udp") and (pd.isna(row.server_port) or row.server_port < 0):
        # (IP fragments without their header, say): a policy of addresses alone would let
        # every protocol and port through
        return f"no {row.proto.upper()} port was seen: a policy without one would allow any"
    if row.dns_qry_name:
        for name in _items(row.dns_qry_name):
            problem = domain_problem(name) or (
                "starts with $, the firewall's suffix wildcard" if name.startswith("$") else ""
            )
            if problem:
                return f"the DNS query name {name!r} {problem}"
        for qtype in _items(row.dns_qry_type):
            if not TOKEN.match(qtype):
                return f"the DNS query type {qtype!r} is not a type name"
    elif row.http_request_method:
        method = _first(row.http_request_method)
        if not TOKEN.match(method):
            return f"the HTTP method {method!r} is not a method name"
        uri = _first(row.http_request_uri)
        if UNSAFE_CHARS.search(uri) or uri.endswith("*"):
            return (
                f"the HTTP URI {uri!r} holds a quote, backslash or control character, "
                "or ends with *, the firewall's prefix wildcard"
            )
    elif (row.coap_type or row.coap_code) and UNSAFE_CHARS.search(_first(row.coap_uri)):
        return (
            f"the CoAP URI {_first(row.coap_uri)!r} holds a quote, backslash or control character"
        )
    return ""


def domain_problem(name) -> str:
    """Why `name` cannot be written as a domain name in a firewall rule, or "": the
    translator puts it in a C string literal, and a DNS name has labels of 1 to 63
    characters and 253 characters at most."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if UNSAFE_CHARS.search(name):
        return "holds a quote, backslash or control character"
    body = name[1:].removeprefix(".") if name.startswith("$") else name  # $.pool.ntp.org
    body = body[:-1] if body.endswith(".") else body
    if not body:
        return "matches every name"
    if len(body) > 253:
        return "is longer than 253 characters"
    if any(not 1 <= len(label) <= 63 for label in body.split(".")):
        return "has an empty label or one longer than 63 characters"
    return ""


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return False


def _server_is_orig(row) -> bool:
    return (row.server_side == "device") == (row.device_side == "orig")


def _bidirectional(row) -> bool:
    return not pd.isna(row.resp_pkts_max) and row.resp_pkts_max > 0


def _family(row, default: str) -> str:
    addresses = [a for a in str(row.remote_addrs).split(";") if a]
    if addresses and all(":" in a and "." not in a and len(a) != 17 for a in addresses):
        return "ipv6"
    return "ipv4" if addresses else default


def _address_value(row):
    remote = str(row.remote)
    if row.remote_kind == "class":
        return remote if remote in CLASS_ALIASES else _class_alias(remote)
    if row.remote_kind == "address":
        return MULTICAST_ALIASES.get(remote, remote)
    if remote_name_problem(row):  # then the addresses it had
        addresses = _items(row.remote_addrs)
        return addresses[0] if len(addresses) == 1 else addresses
    return remote  # a domain name: the firewall resolves it from the DNS traffic it sees


def remote_name_problem(row) -> str:
    """Why the remote party's domain name cannot stand for it in the profile, or "": the
    translator would read it as something else (an alias such as `external`, an address,
    a network), or it is not a name the firewall can match."""
    if row.remote_kind != "domain":
        return ""
    remote = str(row.remote)
    if remote in ADDRESS_ALIASES or _is_address(remote):
        return f"the name {remote!r} would be read as an address alias or a network"
    if remote.startswith("$"):
        return f"the name {remote!r} starts with $, the firewall's suffix wildcard"
    problem = domain_problem(remote)
    return f"the name {remote!r} {problem}" if problem else ""


def _class_alias(klass: str) -> str:
    return {"multicast": "all"}.get(klass, klass)


def _first(values: str) -> str:
    return str(values).split(";")[0] if values and not pd.isna(values) else ""


def _items(values) -> list[str]:
    return [v for v in str(values).split(";") if v] if values and not pd.isna(values) else []


def _values(values: str):
    items = _items(values)
    return items[0] if len(items) == 1 else items


def _application(row) -> dict:
    if row.dns_qry_name:
        section = "mdns" if row.server_port == 5353 else "dns"
        fields = {}
        if row.dns_qry_type:
            fields["qtype"] = _values(row.dns_qry_type)
        fields["domain-name"] = _values(row.dns_qry_name)
        return {section: fields}
    if row.http_request_method:
        if row.server_port == 1900:
            return {"ssdp": {"method": _first(row.http_request_method)}}
        fields = {"method": _first(row.http_request_method)}
        if row.http_request_uri:
            fields["uri"] = _first(row.http_request_uri)
        return {"http": fields}
    if row.coap_type or row.coap_code:
        fields = {}
        types = [t for t in str(row.coap_type).split(";") if t in COAP_TYPES]
        methods = [m for m in str(row.coap_code).split(";") if m in COAP_METHODS]
        if types:
            fields["type"] = types[0]
        if methods:
            fields["method"] = methods[0]
        if row.coap_uri:
            fields["uri"] = _first(row.coap_uri)
        return {"coap": fields}
    if row.dhcp_msg_type:
        kind = _first(row.dhcp_msg_type)
        return {"dhcp": {"type": kind, "client-mac": "self"}} if kind in DHCP_TYPES else {}
    if row.proto == "arp":
        opcodes = _items(row.arp_opcode)
        kind = "reply" if opcodes and "request" not in opcodes and "reply" in opcodes else "request"
        remote = _address_value(row)
        if row.device_side == "orig":
            fields = {"type": kind, "sha": "self", "spa": "self", "tpa": remote}
        else:
            fields = {"type": kind, "spa": remote, "tpa": "self"}
        return {"arp": fields}
    return {}


def _stats(row) -> dict:
    stats = {}
    fwd, bwd = row.orig_pkts_max, row.resp_pkts_max
    if not pd.isna(fwd):
        count = {"fwd": int(fwd)}
        if not pd.isna(bwd) and bwd > 0:
            count["bwd"] = int(bwd)
        stats["packet-count"] = count if len(count) > 1 else count["fwd"]
    low = min(
        x for x in (row.orig_size_min_min, row.resp_size_min_min, float("inf")) if not pd.isna(x)
    )
    high = max(x for x in (row.orig_size_max_max, row.resp_size_max_max, 0) if not pd.isna(x))
    if high > 0 and low != float("inf"):
        stats["packet-size"] = f"{int(low)} - {int(high)}" if high > low else f"< {int(high) + 1}"
    if not pd.isna(row.duration_max) and row.duration_max > 0:
        stats["duration"] = f"{row.duration_max:.3f} s"
    return stats


def printable(text: str) -> str:
    """`text` on one line: control characters (newlines included) shown escaped, as \\n."""
    return CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], str(text))


def _c_name(text: str) -> str:
    return c_safe(str(text))


# --- checking a profile against the format -------------------------------------------


def validate_profile(profile) -> list[str]:
    """Problems that would make the firewall's translator skip, misread or write a broken
    rule; an empty list means the profile is valid."""
    problems = []
    if not isinstance(profile, dict):
        return ["the profile is not a mapping"]
    info = profile.get("device-info")
    if not isinstance(info, dict) or not info.get("name"):
        problems.append("device-info.name is missing")
    else:
        if not NAME.match(str(info["name"])):
            problems.append(f"device-info.name {info['name']!r} is not [A-Za-z0-9_-]")
        if not info.get("mac"):
            problems.append("device-info.mac is missing: the firewall would write a broken rule")
        elif not MAC.match(str(info["mac"])):
            problems.append(f"device-info.mac {info['mac']!r} is not a MAC address")
        for family in ("ipv4", "ipv6"):
            if family in info and not _is_ip(info[family], family):
                problems.append(f"device-info.{family} {info[family]!r} is not an {family} address")
    for name, policy_ in (profile.get("single-policies") or {}).items():
        problems += _check_policy(f"single-policies.{name}", name, policy_, in_interaction=False)
    for name, interaction in (profile.get("interactions") or {}).items():
        if not NAME.match(str(name)) or "backward" in str(name):
            problems.append(f"interaction name {name!r} is not C-safe")
        if not isinstance(interaction, dict) or not interaction:
            problems.append(f"interactions.{name} has no policies")
            continue
        for policy_name, policy_ in interaction.items():
            problems += _check_policy(
                f"interactions.{name}.{policy_name}", policy_name, policy_, in_interaction=True
            )
    return problems


def _check_policy(where: str, name, policy_, in_interaction: bool) -> list[str]:
    problems = []
    if not NAME.match(str(name)) or "backward" in str(name):
        problems.append(f"{where}: policy name is not C-safe ([A-Za-z0-9_-], no 'backward')")
    if not isinstance(policy_, dict):
        return problems + [f"{where}: not a mapping"]
    for key in policy_:
        if key not in POLICY_KEYS or (key == "timeout" and not in_interaction):
            problems.append(f"{where}: unknown key {key!r}")
    protocols = policy_.get("protocols")
    if not isinstance(protocols, dict) or not protocols:
        return problems + [f"{where}: no protocols"]
    problems += _too_broad(where, protocols)
    for protocol, fields in protocols.items():
        if protocol not in KNOWN_FIELDS:
            problems.append(f"{where}: unknown protocol {protocol!r} (the firewall drops it)")
            continue
        if not isinstance(fields, dict):
            problems.append(f"{where}.{protocol}: must be a map, not {fields!r}")
            continue
        for field_name, value in fields.items():
            if field_name not in KNOWN_FIELDS[protocol]:
                problems.append(f"{where}.{protocol}: unknown field {field_name!r}")
            else:
                problems += _check_value(
                    f"{where}.{protocol}.{field_name}", protocol, field_name, value
                )
    if "initiator" in policy_ and policy_["initiator"] not in ("src", "dst"):
        problems.append(f"{where}: initiator must be src or dst")
    if "bidirectional" in policy_ and not isinstance(policy_["bidirectional"], bool):
        problems.append(f"{where}: bidirectional must be true or false")
    for key, value in (policy_.get("stats") or {}).items():
        if key not in STATS_KEYS:
            problems.append(f"{where}.stats: unknown stat {key!r}")
            continue
        for item in value.values() if isinstance(value, dict) else [value]:
            if not _stat_ok(key, item):
                problems.append(f"{where}.stats.{key}: invalid value {item!r}")
    return problems


def _too_broad(where: str, protocols: dict) -> list[str]:
    """A policy the firewall would read as 'allow everything between these addresses': no
    protocol above IP, or TCP/UDP without a port."""
    if not set(protocols) - {"ipv4", "ipv6"}:
        return [f"{where}: addresses only, no protocol: it would allow all traffic"]
    return [
        f"{where}.{proto}: neither src-port nor dst-port: it would allow every port"
        for proto in ("tcp", "udp")
        if proto in protocols
        and not ({"src-port", "dst-port"} & set(protocols[proto] or {}))
        and not (set(protocols) & APPLICATION_SECTIONS)
    ]


def _check_value(where: str, protocol: str, field_name: str, value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if value is None or not values:
        return [f"{where}: empty value"]
    problems = []
    for item in values:
        if field_name.endswith("port") and not (isinstance(item, int) and 0 <= item <= 65535):
            problems.append(f"{where}: {item!r} is not a port number")
        elif protocol == "coap" and field_name == "type" and item not in COAP_TYPES:
            problems.append(f"{where}: {item!r} is not a CoAP type")
        elif protocol == "coap" and field_name == "method" and item not in COAP_METHODS:
            problems.append(f"{where}: {item!r} is not a CoAP method")
        elif protocol == "dhcp" and field_name == "type" and item not in DHCP_TYPES:
            problems.append(f"{where}: {item!r} is not a DHCP message type")
        elif protocol == "arp" and field_name == "type" and item not in ARP_TYPES:
            problems.append(f"{where}: {item!r} is not an ARP type")
        elif field_name in ("domain-name", "uri", "qtype", "method", "src", "dst") and (
            not isinstance(item, str) or not item
        ):
            problems.append(f"{where}: {item!r} is not a string")
        elif field_name == "domain-name" and domain_problem(item):
            problems.append(f"{where}: {item!r} {domain_problem(item)}")
        elif (
            field_name in ("src", "dst")
            and protocol in ("ipv4", "ipv6")
            and item not in ADDRESS_ALIASES
            and not _is_address(item)
            and domain_problem(item)
        ):
            problems.append(
                f"{where}: {item!r} is not an address, an alias or a domain "
                f"name: it {domain_problem(item)}"
            )
        elif field_name in ("qtype", "method") and not TOKEN.match(item):
            problems.append(f"{where}: {item!r} is not a {field_name} name")
        elif field_name == "uri" and UNSAFE_CHARS.search(item):
            problems.append(f"{where}: {item!r} holds a quote, backslash or control character")
        elif field_name == "response" and not isinstance(item, bool):
            problems.append(f"{where}: must be true or false")
    return problems


def _stat_ok(key: str, value) -> bool:
    text = str(value).strip()
    if key == "packet-count":
        return isinstance(value, int) and value >= 0
    if key == "packet-size":
        return bool(re.fullmatch(r"(<\s*\d+|\d+\s*-\s*\d+|\d+)", text))
    if key == "duration":
        return bool(re.fullmatch(r"\d+(\.\d+)?\s*(s|ms|us)", text))
    if key == "rate":
        return bool(re.fullmatch(r"\d+/(second|minute|hour|day)( burst \d+ packets)?", text))
    return False


def _is_ip(value, family: str) -> bool:
    try:
        return ipaddress.ip_address(str(value)).version == (4 if family == "ipv4" else 6)
    except ValueError:
        return False
