"""The application fields: every stage reads this one registry.

An entry says where a field comes from (the Wireshark fields tshark exports and how their
values are spelled), what it means, and what later stages do with it: whether it is carried
into the flows CSV, whether it belongs to a flow's fingerprint (and so to signatures), and
how pattern.txt and the evaluation name it. Adding a field (say MQTT topic) is one entry
here plus, where the firewall format has a place for it, one line in profile.py.

The order of the entries is the order of the columns in the packets, flows and signature
CSVs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .coded import Coded, choose, combine

# Vocabularies: Wireshark's numbers -> the names network people read.
DNS_TYPES = {
    "1": "A",
    "2": "NS",
    "5": "CNAME",
    "6": "SOA",
    "12": "PTR",
    "13": "HINFO",
    "15": "MX",
    "16": "TXT",
    "28": "AAAA",
    "33": "SRV",
    "35": "NAPTR",
    "41": "OPT",
    "43": "DS",
    "46": "RRSIG",
    "47": "NSEC",
    "48": "DNSKEY",
    "52": "TLSA",
    "64": "SVCB",
    "65": "HTTPS",
    "255": "ANY",
}
DHCP_TYPES = {
    "1": "discover",
    "2": "offer",
    "3": "request",
    "4": "decline",
    "5": "ack",
    "6": "nak",
    "7": "release",
    "8": "inform",
    "9": "forcerenew",
    "10": "leasequery",
    "11": "leaseunassigned",
    "12": "leaseunknown",
    "13": "leaseactive",
}
COAP_TYPES = {"0": "CON", "1": "NON", "2": "ACK", "3": "RST"}
COAP_METHODS = {
    "0": "EMPTY",
    "1": "GET",
    "2": "POST",
    "3": "PUT",
    "4": "DELETE",
    "5": "FETCH",
    "6": "PATCH",
    "7": "iPATCH",
}
ARP_OPCODES = {"1": "request", "2": "reply", "3": "rarp-request", "4": "rarp-reply"}


# ---------------------------------------------------------------------------------------
# How tshark's values become CSV values: Coded columns, each function applied once per
# distinct value


def first(values: Coded) -> Coded:
    """First occurrence of an aggregated field ('a;b' -> 'a')."""
    return values.map(lambda s: s.split(";", 1)[0])


def distinct(values: Coded) -> Coded:
    """Every value once, in order ('a;b;a' -> 'a;b')."""
    return values.map(lambda s: ";".join(dict.fromkeys(s.split(";"))) if s else "")


def as_is(values: Coded) -> Coded:
    return values


def first_present(*columns: Coded) -> Coded:
    """The first column's value where it has one, else the next's (ICMP or ICMPv6 type)."""
    result = columns[-1]
    for column in reversed(columns[:-1]):
        result = choose(column.filled(), column, result)
    return first(result)


def joined(*columns: Coded) -> Coded:
    """Several fields' values as one list ('a' and 'b' -> 'a;b'): A and AAAA answers."""
    result = columns[0]
    for column in columns[1:]:
        result = combine(lambda a, b: f"{a};{b}" if a and b else a + b, result, column)
    return result


def arp_opcode(values: Coded) -> Coded:
    return first(values).map(ARP_OPCODES.get)


def named(names: dict, unknown_prefix: str):
    """Numbers -> names from a vocabulary, unknown ones as prefix + number."""

    def name_all(value: str) -> str:
        if not value:
            return ""
        parts = (names.get(v, f"{unknown_prefix}{v}") for v in value.split(";"))
        return ";".join(dict.fromkeys(parts))

    return lambda values: values.map(name_all)


def coap_codes(values: Coded) -> Coded:
    """CoAP code numbers -> a method (GET ...) or a response code class.detail (2.05)."""

    def one(code: str) -> str:
        number = int(code)
        spelled = f"{number >> 5}.{number & 31:02d}"  # (an unassigned method: 0.08 ... 0.31)
        return COAP_METHODS.get(code, spelled) if number < 32 else spelled

    def spell(value: str) -> str:
        return ";".join(dict.fromkeys(one(c) for c in value.split(";") if c.isdigit()))

    return values.map(spell)


_METHOD_NAMES = frozenset(COAP_METHODS.values())
_COAP_RESPONSE = re.compile(r"[0-7]\.(?:[0-2][0-9]|3[01])")


def coap_code_respelled(value: str) -> str | None:
    """A coap_code cell as coap_codes spells it, from what a spreadsheet may have made of
    it: it takes a lone response code for a number and writes it back without its trailing
    zeros ('4.00' -> '4', '2.10' -> '2.1'). The detail always has two digits (0-31), so
    '4' can only be 4.00 and '2.1' only 2.10; '2.05' and lists ('GET;2.05', text to a
    spreadsheet) come back as they were. None: not a CoAP code in any spelling (a date
    made of '4.04' by a spreadsheet in another locale cannot be told back)."""
    items = []
    for item in value.split(";"):
        item = item.strip()
        if re.fullmatch(r"[0-7]", item):
            item += ".00"
        elif re.fullmatch(r"[0-7]\.[0-3]", item):
            item += "0"
        if item not in _METHOD_NAMES and not _COAP_RESPONSE.fullmatch(item):
            return None
        items.append(item)
    return ";".join(items)


# Spellings (AppField.spelling, schema Column.spelling) a spreadsheet's re-save can change
# and that can be told back: spelling -> function(value) -> the value, or None if unknown.
RESPELLED = {"coap_code": coap_code_respelled}


@dataclass(frozen=True)
class AppField:
    name: str  # the CSV column (packets, and flows/signature where carried)
    tshark: tuple[str, ...]  # Wireshark fields read; the first is the one spelled
    type: str  # schema type: "text" (attacker-controlled), "str", "int", "bool"
    meaning: str  # in the packets CSV
    spell: object = distinct  # tshark's column(s) (Coded) -> the CSV column (Coded)
    label: str = ""  # pattern.txt / evaluation: "DNS query"; "" for packet-only
    flow_meaning: str = ""  # in the flows CSV; "" when the field stays in the packets CSV
    fingerprint: bool = True  # part of the flow fingerprint (when carried into flows)
    spelling: str = ""  # a key of RESPELLED: how a spreadsheet-converted value is told back

    @property
    def in_flows(self) -> bool:
        return bool(self.flow_meaning)

    @property
    def protocol(self) -> str:
        return self.name.split("_", 1)[0]


REGISTRY = [
    AppField(
        "dns_qry_name",
        ("dns.qry.name",),
        "text",
        "DNS/mDNS query name(s), ';' between several",
        label="DNS query",
        flow_meaning="DNS query names, ';' between distinct values",
    ),
    AppField(
        "dns_qry_type",
        ("dns.qry.type",),
        "str",
        "query type (A, AAAA, PTR, ...), ';' between several",
        named(DNS_TYPES, "TYPE"),
        label="type",
        flow_meaning="DNS query types",
    ),
    AppField(
        "dns_flags_response",
        ("dns.flags.response",),
        "bool",
        "1 for a DNS response, 0 for a query",
        first,
    ),
    AppField(
        "dns_answer_addrs",
        ("dns.a", "dns.aaaa"),
        "str",
        "addresses answered (A and AAAA records), ';' between them",
        joined,
    ),
    AppField(
        "http_request_method",
        ("http.request.method",),
        "text",
        "HTTP (and SSDP) request method",
        label="HTTP",
        flow_meaning="HTTP request methods",
    ),
    AppField(
        "http_request_uri",
        ("http.request.uri",),
        "text",
        "HTTP request URI",
        as_is,
        label="URI",
        flow_meaning="HTTP request URIs",
    ),
    AppField(
        "http_host",
        ("http.host",),
        "text",
        "HTTP Host header",
        label="host",
        flow_meaning="HTTP hosts",
        fingerprint=False,
    ),
    AppField("http_response_code", ("http.response.code",), "int", "HTTP status code", first),
    AppField(
        "coap_type",
        ("coap.type",),
        "str",
        "CoAP message type: CON, NON, ACK, RST",
        named(COAP_TYPES, ""),
        label="CoAP",
        flow_meaning="CoAP message types",
    ),
    AppField(
        "coap_code",
        ("coap.code",),
        "str",
        "CoAP method (GET, POST, PUT, DELETE ...) or code class.detail (2.05, 4.00 ...; "
        "a method code without a name: 0.08 ...)",
        coap_codes,
        label="code",
        flow_meaning="CoAP methods / codes",
        spelling="coap_code",
    ),
    AppField(
        "coap_uri",
        ("coap.opt.uri_path_recon",),
        "text",
        "CoAP URI path",
        as_is,
        label="URI",
        flow_meaning="CoAP URI paths",
    ),
    AppField(
        "dhcp_msg_type",
        ("dhcp.option.dhcp",),
        "str",
        "DHCP message type: discover, offer, request, ack, ...",
        named(DHCP_TYPES, "type-"),
        label="DHCP",
        flow_meaning="DHCP message types",
    ),
    AppField(
        "dhcp_hostname", ("dhcp.option.hostname",), "text", "DHCP client host name option", as_is
    ),
    AppField(
        "tls_server_name",
        ("tls.handshake.extensions_server_name",),
        "text",
        "TLS (and QUIC) server name indication",
        label="TLS server name",
        flow_meaning="TLS server names",
    ),
    AppField(
        "icmp_type",
        ("icmp.type", "icmpv6.type"),
        "int",
        "ICMP or ICMPv6 type",
        first_present,
        label="ICMP type",
        flow_meaning="ICMP types",
    ),
    AppField(
        "arp_opcode",
        ("arp.opcode",),
        "str",
        "request or reply",
        arp_opcode,
        label="ARP",
        flow_meaning="ARP opcodes",
    ),
]
BY_NAME = {f.name: f for f in REGISTRY}
PACKET_FIELDS = [f.name for f in REGISTRY]  # packets CSV columns
FLOW_FIELDS = [f.name for f in REGISTRY if f.in_flows]  # carried into the flows CSV
FINGERPRINT_FIELDS = [f.name for f in REGISTRY if f.in_flows and f.fingerprint]
TSHARK_FIELDS = [t for f in REGISTRY for t in f.tshark]


def application_text(row, separator: str = ", ") -> str:
    """A pattern's application fields in words: 'DNS query a.example, type A'."""
    return separator.join(
        f"{BY_NAME[name].label} {value}"
        for name in FINGERPRINT_FIELDS
        if isinstance(value := getattr(row, name, ""), str) and value
    )
