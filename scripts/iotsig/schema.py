"""The one definition of every CSV the tools write: column names, types and meaning.

Each stage checks the columns it needs with `Table.require` and names what is missing;
the README's column tables are generated from here (`python -m iotsig.schema`).

Types: "text" free text (file names, or packet content an attacker controls: escaped
against spreadsheet formulas on write, see csvio), "str" a token from a typed field or a
fixed vocabulary (addresses, MACs, protocol names, flags), "int", "float", "bool" (1/0).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import fields


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str
    source: str = ""  # the Wireshark field(s) or computation it comes from
    # How a copy re-saved by a spreadsheet is read (csvio): "epoch" a time the tools write
    # with microseconds (a spreadsheet keeps 15 digits: 10 us); "numbers" text that is only
    # numbers (nothing a spreadsheet's conversion loses); else a key of fields.RESPELLED.
    spelling: str = ""


class Table:
    def __init__(self, name: str, columns: list[Column], notes: str = ""):
        self.name = name
        self.columns = columns
        self.by_name = {c.name: c for c in columns}
        self.notes = notes  # rules that span several columns, printed under the table

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def of_type(self, *types: str) -> list[str]:
        return [c.name for c in self.columns if c.type in types]

    def markdown(self) -> str:
        rows = ["| column | type | meaning | from |", "|---|---|---|---|"]
        rows += [f"| `{c.name}` | {c.type} | {c.meaning} | {c.source} |" for c in self.columns]
        return "\n".join(rows) + (f"\n\n{self.notes}" if self.notes else "")


def _cols(*specs: tuple) -> list[Column]:
    return [Column(*spec) for spec in specs]


def _spelling(field_name: str) -> str:
    return fields.BY_NAME[field_name].spelling


PACKETS = Table(
    "packets",
    _cols(
        ("capture", "text", "capture file name the packet was read from", "file name"),
        ("frame_number", "int", "frame number in the capture, from 1", "frame.number"),
        (
            "ts",
            "float",
            "capture time, epoch seconds with microseconds",
            "frame.time_epoch",
            "epoch",
        ),
        ("time_utc", "str", "the same time, readable, ISO 8601 UTC", "frame.time_epoch"),
        ("frame_len", "int", "bytes on the wire", "frame.len"),
        (
            "eth_src",
            "str",
            "source MAC (802.11: the source address, else the transmitter)",
            "eth.src, sll.src.eth, wlan.sa, wlan.ta, arp.src.hw_mac",
        ),
        (
            "eth_src_vendor",
            "str",
            "vendor of the source MAC (Wireshark's OUI database)",
            "eth.src.oui_resolved (802.11: Wireshark's manuf file)",
        ),
        (
            "eth_dst",
            "str",
            "destination MAC (802.11: the destination address, else the receiver)",
            "eth.dst, wlan.da, wlan.ra",
        ),
        (
            "eth_dst_vendor",
            "str",
            "vendor of the destination MAC",
            "eth.dst.oui_resolved (802.11: Wireshark's manuf file)",
        ),
        (
            "ip_version",
            "int",
            "4 or 6 for IP packets (the conversation's IP header: a tunnel's inner one), "
            "empty otherwise",
            "ip / ipv6",
        ),
        (
            "ip_src",
            "str",
            "source address: IPv4 or IPv6; the sender IP for ARP",
            "ip.src, ipv6.src, arp.src.proto_ipv4",
        ),
        (
            "ip_dst",
            "str",
            "destination address: IPv4 or IPv6; the target IP for ARP",
            "ip.dst, ipv6.dst, arp.dst.proto_ipv4",
        ),
        (
            "ip_ttl",
            "int",
            "IPv4 TTL or IPv6 hop limit of the conversation's IP header (each fragment's "
            "own); empty for ARP and other non-IP frames",
            "ip.ttl, ipv6.hlim",
        ),
        (
            "l4_proto",
            "str",
            "transport protocol: tcp, udp, icmp, icmpv6, igmp, ..., "
            "or the link-layer protocol of non-IP frames (arp, eapol, ...)",
            "ip.proto, ipv6.nxt, frame.protocols",
        ),
        ("src_port", "int", "TCP/UDP source port", "tcp.srcport, udp.srcport"),
        ("dst_port", "int", "TCP/UDP destination port", "tcp.dstport, udp.dstport"),
        (
            "tcp_flags",
            "str",
            "TCP flags set, as tcpdump letters: S SYN, A ACK, F FIN, R RST, "
            "P PSH, U URG, E ECE, C CWR",
            "tcp.flags",
        ),
        (
            "l4_payload_len",
            "int",
            "TCP/UDP payload bytes (of a fragmented datagram: all of it, in the row of the "
            "frame that completes it; empty in its other fragments' rows)",
            "tcp.len, udp.length - 8",
        ),
        ("highest_layer", "str", "the last protocol Wireshark dissected", "frame.protocols"),
        (
            "tunnel",
            "str",
            "the encapsulation of a tunnelled packet: gre, ipip (IPv4 in IPv4), 6in4, 4in6, "
            "ip6ip6, vxlan, geneve, gtp, teredo... (Wireshark's protocol name); empty otherwise",
            "frame.protocols",
        ),
        (
            "outer_ip_src",
            "str",
            "a tunnelled packet's outermost IP source address (the tunnel's end)",
            "ip.src, ipv6.src (first occurrence)",
        ),
        (
            "outer_ip_dst",
            "str",
            "a tunnelled packet's outermost IP destination address",
            "ip.dst, ipv6.dst (first occurrence)",
        ),
        *[(f.name, f.type, f.meaning, ", ".join(f.tshark), f.spelling) for f in fields.REGISTRY],
        (
            "direction",
            "str",
            "with --device-mac/--device-ip: sent (by the device), received, or other; "
            "given only --device-ip, a frame from the unspecified address (0.0.0.0 or ::, "
            "a DHCP DISCOVER before the device has its address) is sent when its MAC is one that "
            "the device's IP is sent from or to in the same block of rows",
            "computed",
        ),
    ),
    notes=(
        "**Tunnels.** The conversation is the innermost IP header (or ARP message) that is "
        "not quoted inside an ICMP message, in the layer order of `frame.protocols`: every "
        "column (MACs, addresses, `ip_version`, `ip_ttl`, `l4_proto`, ports, TCP flags, payload "
        "length, application fields) comes from that packet, never mixed with an outer "
        "header. A tunnelled packet (GRE, IP-in-IP, 6in4, VXLAN and the like) is its inner "
        "packet: the MACs are the inner Ethernet header's where it has one (VXLAN), and the "
        "outer header is kept in `tunnel` (the encapsulation) and `outer_ip_src`/"
        "`outer_ip_dst` (the outermost IP header's addresses: the tunnel's two ends). An ICMP "
        "error is not a tunnel: it quotes the header of the packet it answers "
        "(`eth:ip:icmp:ip:udp`), and its row is the ICMP message itself (its own addresses, "
        "`l4_proto` icmp or icmpv6, no ports).\n\n"
        "**IP fragments.** tshark reassembles a fragmented IPv4 or IPv6 datagram in the frame "
        "that completes it (its last fragment) and dissects the transport and application "
        "there; its other fragments are bare data. Every fragment's row carries its "
        "datagram's `ip_version`, `ip_src`, `ip_dst`, `l4_proto`, `src_port` and `dst_port`, "
        "so that all the fragments fall in the datagram's flow: each fragment's `frame_len` "
        "counts (the flow's frame bytes are the whole datagram's), while `l4_payload_len`, "
        "`tcp_flags` and the application fields are in the completing frame's row only (the "
        "payload counted once); `ip_ttl` is each fragment's own IP header's. Fragments of "
        "different datagrams are told apart by tshark's "
        "reassembly (addresses, protocol and identification): never merged. A fragment whose "
        "datagram never completes (a fragment lost, or not completed within 100,000 frames) "
        "is kept as tshark gives it (`l4_proto` from the IP header, no ports, no payload "
        "length) and the translator warns once per capture with their count."
    ),
)

_DIRECTION_STATS = []
for _side, _who in (("orig", "originator"), ("resp", "responder")):
    for _stat in ("min", "max", "mean", "std"):
        _DIRECTION_STATS.append(
            (
                f"{_side}_size_{_stat}",
                "float",
                f"{_stat} frame length of the {_who}'s packets",
                "frame_len",
            )
        )
    for _stat in ("min", "max", "mean", "std"):
        _DIRECTION_STATS.append(
            (f"{_side}_iat_{_stat}", "float", f"{_stat} seconds between the {_who}'s packets", "ts")
        )

FLOWS = Table(
    "flows",
    _cols(
        ("uid", "text", "flow id, unique in the file: capture name and flow number", "computed"),
        ("capture", "text", "capture file the packets came from", "capture"),
        ("ts", "float", "time of the first packet, epoch seconds", "ts", "epoch"),
        ("duration", "float", "seconds from the first to the last packet", "ts"),
        (
            "proto",
            "str",
            "tcp, udp, icmp, icmpv6, ... or arp and other link-layer protocols",
            "l4_proto",
        ),
        (
            "service",
            "str",
            "application protocol seen (dns, http, tls, dhcp, coap, ...)",
            "highest_layer",
        ),
        (
            "orig_h",
            "str",
            "originator address: sent the first packet (for TCP, the SYN)",
            "ip_src/ip_dst (MAC for non-IP frames)",
        ),
        ("orig_p", "int", "originator port", "src_port/dst_port"),
        ("resp_h", "str", "responder address", "ip_src/ip_dst"),
        ("resp_p", "int", "responder port", "src_port/dst_port"),
        ("orig_pkts", "int", "packets sent by the originator", "count"),
        (
            "orig_bytes",
            "int",
            "TCP/UDP payload bytes sent by the originator (as Zeek)",
            "l4_payload_len",
        ),
        (
            "orig_frame_bytes",
            "int",
            "frame bytes sent by the originator (as tshark -z conv)",
            "frame_len",
        ),
        ("resp_pkts", "int", "packets sent by the responder", "count"),
        ("resp_bytes", "int", "TCP/UDP payload bytes sent by the responder", "l4_payload_len"),
        ("resp_frame_bytes", "int", "frame bytes sent by the responder", "frame_len"),
        ("first_frame", "int", "frame number of the first packet", "frame_number"),
        ("last_frame", "int", "frame number of the last packet", "frame_number"),
        (
            "handshake",
            "bool",
            "TCP: 1 when the capture holds the flow's opening (a SYN or SYN-ACK), 0 for a "
            "connection already open when the capture began (or whose opening was lost); "
            "empty for other protocols",
            "tcp_flags",
        ),
        (
            "device_side",
            "str",
            "which side is the device under study: orig, resp, or empty (a flow from "
            "0.0.0.0 or :: is the device's when its packets' direction says sent)",
            "--device-ip or direction",
        ),
        ("orig_mac", "str", "originator MAC", "eth_src/eth_dst"),
        ("orig_vendor", "str", "originator MAC vendor", "eth_src_vendor"),
        ("resp_mac", "str", "responder MAC", "eth_src/eth_dst"),
        ("resp_vendor", "str", "responder MAC vendor", "eth_dst_vendor"),
        (
            "remote_h",
            "str",
            "the other party's address when the device is one side, else the responder",
            "orig_h/resp_h",
        ),
        (
            "remote_name",
            "text",
            "the remote party's domain: the name the capture's DNS answers "
            "gave that address before the flow, else the TLS server name, else the HTTP host",
            "dns_answer_addrs, tls_server_name, http_host",
        ),
        (
            "remote_class",
            "str",
            "gateway (the device's DNS/DHCP server or router), local "
            "(private, link-local), multicast, broadcast or external",
            "remote_h",
        ),
        (
            "remote_country",
            "str",
            "country code of an external remote_h (ISO 3166, e.g. US), from the offline "
            "data the geoip2fast package ships (MaxMind GeoLite2; the traffic report names its "
            "date); empty for a private, link-local, multicast or broadcast address and for "
            "one the data does not know",
            "remote_h",
        ),
        (
            "remote_network",
            "str",
            "the network of the autonomous system that routes an external remote_h, as the "
            "same data gives it (e.g. 8.8.8.0/24: that data has the system's network and "
            "organisation, not its number); empty as remote_country",
            "remote_h",
        ),
        (
            "remote_org",
            "text",
            "the organisation of that autonomous system (e.g. GOOGLE), from the same data; "
            "empty as remote_country",
            "remote_h",
        ),
        # A flow's field is the set of its packets' values: text stays text, the rest is "str".
        *[
            (f.name, "text" if f.type == "text" else "str", f.flow_meaning, f.name, f.spelling)
            for f in fields.REGISTRY
            if f.in_flows
        ],
        *_DIRECTION_STATS,
        (
            "first_sizes",
            "text",
            "frame lengths of the first 10 packets, negative when sent by the responder",
            "frame_len",
            "numbers",
        ),
        (
            "first_payload_sizes",
            "text",
            "the packet profile: frame lengths of the first 10 packets "
            "that carry TCP/UDP payload (requests and replies), negative when sent by the "
            "responder; a packet repeated at once (same direction and size: a retransmission or "
            "a duplicate) counts once",
            "frame_len, l4_payload_len",
            "numbers",
        ),
    ),
)


def _flow_column(name: str, meaning: str | None = None) -> tuple:
    """A flows CSV column as a bursts CSV column: the same name, type and spelling; the
    meaning said of the burst's own packets where it differs."""
    c = FLOWS.by_name[name]
    return (name, c.type, meaning or c.meaning, c.source, c.spelling)


BURSTS = Table(
    "bursts",
    _cols(
        (
            "uid",
            "text",
            "burst id, unique in the file: its flow's uid, '/', its number in the flow",
            "computed",
        ),
        ("flow_uid", "text", "uid of the flow it belongs to (flows CSV)", "computed"),
        ("burst", "int", "its number in the flow, from 1", "computed"),
        _flow_column("capture"),
        _flow_column("ts", "time of the burst's first packet, epoch seconds"),
        _flow_column("duration", "seconds from the burst's first to its last packet"),
        (
            "gap_before",
            "float",
            "seconds of silence in the flow before the burst (more than --burst-gap); empty "
            "for a flow's first burst",
            "ts",
        ),
        (
            "opens",
            "bool",
            "1 when the burst opens its connection (the first burst of a flow whose opening "
            "the capture holds: a TCP handshake, or another protocol's first packet after "
            "--idle-timeout of silence); 0 for a burst inside a connection already open",
            "computed",
        ),
        *[
            _flow_column(c)
            for c in ("proto", "orig_h", "orig_p", "resp_h", "resp_p", "device_side")
        ],
        *[
            _flow_column(c, f"{FLOWS.by_name[c].meaning}, of the burst's packets")
            for c in (
                "orig_pkts",
                "orig_bytes",
                "orig_frame_bytes",
                "resp_pkts",
                "resp_bytes",
                "resp_frame_bytes",
                "first_frame",
                "last_frame",
            )
        ],
        *[
            _flow_column(c)
            for c in ("orig_mac", "resp_mac", "remote_h", "remote_name", "remote_class")
        ],
        *[
            (f.name, "text" if f.type == "text" else "str", f.flow_meaning, f.name, f.spelling)
            for f in fields.REGISTRY
            if f.in_flows
        ],
        *[
            _flow_column(c, f"{FLOWS.by_name[c].meaning}, in the burst")
            for c in ("orig_size_min", "orig_size_max", "resp_size_min", "resp_size_max")
        ],
        _flow_column(
            "first_payload_sizes",
            "the burst's packet profile: frame lengths of its first 10 packets that carry "
            "TCP/UDP payload, negative when sent by the responder (a packet repeated at once "
            "counts once); the detector also reads two segments in a row from one side as one "
            "message",
        ),
        (
            "keepalive",
            "bool",
            "1 when the burst is one of a periodic series: the same parties, server port and "
            "largest frame each way (to 16 bytes), another such burst one or two periods "
            "before or after it (see the keep-alive rule)",
            "computed",
        ),
        ("period", "float", "the series' period in seconds, for a keep-alive", "computed"),
    ),
    notes="One row per burst of every flow of several bursts, and per burst inside a "
    "connection already open; a flow of one burst that opens its connection is its flows "
    "CSV row alone.",
)

# The flow metrics a signature keeps the range of, per pattern.
RANGE_METRICS = [
    "orig_pkts",
    "resp_pkts",
    "orig_frame_bytes",
    "resp_frame_bytes",
    "duration",
    "orig_size_min",
    "orig_size_max",
    "resp_size_min",
    "resp_size_max",
]
SIGNATURE_VERSION = 3

SIGNATURE = Table(
    "signature",
    _cols(
        ("signature_version", "int", f"format version of this file ({SIGNATURE_VERSION})", ""),
        ("event", "text", "event name (the --device-name unless --event is given)", ""),
        ("device_name", "text", "device under study", "--device-name"),
        ("device_ip", "str", "device address in the training recordings", "--device-ip"),
        ("pattern", "text", "pattern name, C-safe, as used in profile.yaml", "computed"),
        (
            "variant",
            "int",
            "the event's route this pattern belongs to, from 1: an event the app "
            "performs by different routes (directly, through the cloud) has one variant per route, "
            "each detected on its own",
            "computed",
        ),
        ("order", "int", "position in the event, from 1", "median start offset"),
        ("role", "str", "background (also seen without the event) or event", "--baseline"),
        (
            "unit",
            "str",
            "flow: the pattern is a flow (flows CSV); burst: a burst inside a connection that "
            "was already open (bursts CSV, opens 0), matched against a capture's bursts",
            "computed",
        ),
        (
            "device_side",
            "str",
            "orig: the device opened the flow; resp: the other side did",
            "flows.device_side",
        ),
        ("proto", "str", "tcp, udp, icmp, arp, ...", "flows.proto"),
        ("remote", "text", "the remote party: domain name, else address, else class", "flows"),
        ("remote_kind", "str", "domain, address or class", "computed"),
        ("remote_class", "str", "gateway, local, multicast, broadcast, external", "flows"),
        ("server_port", "int", "the fixed (server-side) port", "flows.orig_p/resp_p"),
        ("server_side", "str", "who holds the fixed port: device or remote", "computed"),
        *[
            (f, "text", "application field, as in the flows CSV", "flows." + f, _spelling(f))
            for f in fields.FINGERPRINT_FIELDS
        ],
        ("recordings_seen", "int", "recordings the pattern appeared in", "computed"),
        ("recordings_total", "int", "recordings given", "computed"),
        (
            "start_offset_median",
            "float",
            "median seconds from the first pattern flow of each recording",
            "flows.ts",
        ),
        ("flows_min", "int", "fewest matching flows in one recording", "count"),
        ("flows_max", "int", "most matching flows in one recording", "count"),
        *[
            (f"{m}_{b}", "float", f"{b} of {m} over the pattern's flows", "flows." + m)
            for m in RANGE_METRICS
            for b in ("min", "max")
        ],
        ("remote_addrs", "str", "addresses the remote party had, ';' between them", "flows"),
        (
            "packet_profile",
            "str",
            "the sizes of the first packets that carry payload, as in the "
            "flows' first_payload_sizes, that every flow of the pattern has: one item per packet, "
            "LOW..HIGH or one size, negative when sent by the responder (e.g. '178..182 -395'); "
            "empty when the flows carry no payload",
            "flows.first_payload_sizes",
        ),
        (
            "accepted_profile",
            "str",
            "for a burst pattern learned from long captures: the sizes a burst may carry to "
            "match, each item of packet_profile widened by up to a tenth of its size but "
            "never past halfway to a size the same fingerprint carried elsewhere in the "
            "capture (see Burst patterns); empty: packet_profile as it is",
            "computed",
        ),
        (
            "periodic",
            "bool",
            "1 when the event's own bursts were keep-alives (it recurs on a timer): "
            "keep-alive bursts may match the pattern; 0: they never do",
            "bursts.keepalive",
        ),
        (
            "idle_timeout",
            "float",
            "how the flows it was learned from were built (seconds): event-detector builds a "
            "capture's flows the same way unless told otherwise",
            "--idle-timeout",
        ),
        ("max_duration", "float", "the same, for --max-duration", "--max-duration"),
        ("burst_gap", "float", "the same, for --burst-gap", "--burst-gap"),
        (
            "keepalive_period",
            "float",
            "for a burst event pattern learned from long captures: the period (seconds) of "
            "the keep-alives there that carry its sizes (the same fingerprint, the largest "
            "frame each way within its range), which a live watch uses for their series "
            "until it has seen that series' own period; empty: none (a signature without "
            "this column reads as empty)",
            "bursts.period",
        ),
    ),
)
# Columns a signature of version 3 may lack (written before them), and what they were then.
SIGNATURE_V3_DEFAULTS = {"keepalive_period": float("nan")}
# Columns a signature of version 2 lacks, and what they were then.
SIGNATURE_V2_DEFAULTS = {
    "unit": "flow",
    "accepted_profile": "",
    "periodic": 0,
    "idle_timeout": float("nan"),
    "max_duration": float("nan"),
    "burst_gap": float("nan"),
    "keepalive_period": float("nan"),
}


INVENTORY = Table(
    "inventory",
    _cols(
        ("mac", "str", "MAC address seen as a frame's source or destination", "eth_src, eth_dst"),
        (
            "vendor",
            "str",
            "vendor from Wireshark's OUI database (empty: unregistered, or a "
            "locally administered address)",
            "eth_src_vendor, eth_dst_vendor",
        ),
        (
            "role",
            "str",
            "device (the device under study), gateway (a router: sends from outside "
            "addresses, or owns the device's gateway address), host, multicast or broadcast",
            "computed",
        ),
        ("is_device", "bool", "1 for the device under study", "--device-ip / --device-mac"),
        (
            "ipv4",
            "str",
            "IPv4 addresses it sent from (ARP sender addresses too), ';' between "
            "them; a gateway's own local addresses only",
            "ip_src",
        ),
        (
            "ipv6",
            "str",
            "IPv6 addresses it sent from, ';' between them; a gateway's own only",
            "ip_src",
        ),
        (
            "dhcp_hostname",
            "text",
            "host names it gave in its own DHCP messages, ';' between them (a server's "
            "offer or ack that echoes a client's name does not count for the server)",
            "dhcp_hostname",
        ),
        ("pkts_sent", "int", "frames it sent", "eth_src"),
        ("bytes_sent", "int", "frame bytes it sent", "frame_len"),
        (
            "pkts_received",
            "int",
            "frames sent to it (to a broadcast or multicast MAC: on its row)",
            "eth_dst",
        ),
        ("bytes_received", "int", "frame bytes sent to it", "frame_len"),
        ("first_ts", "float", "first frame from or to it, epoch seconds", "ts", "epoch"),
        ("last_ts", "float", "last frame from or to it, epoch seconds", "ts", "epoch"),
        ("first_time_utc", "str", "first_ts, readable, ISO 8601 UTC", "ts"),
        ("last_time_utc", "str", "last_ts, readable, ISO 8601 UTC", "ts"),
        ("captures", "int", "captures it appears in", "capture"),
        (
            "relayed_addrs",
            "int",
            "for a gateway: outside addresses it forwarded frames from",
            "ip_src",
        ),
    ),
)


DETECTIONS = Table(
    "detections",
    _cols(
        ("capture", "text", "capture (or flows CSV) the event was found in", "file name"),
        ("event", "text", "event the signature describes", "signature.event"),
        ("device_name", "text", "device the signature was learned on", "signature.device_name"),
        ("device_ip", "str", "device address whose flows were matched", "signature.device_ip"),
        (
            "start",
            "float",
            "first packet of the occurrence's first matched flow, epoch seconds",
            "flows.ts",
        ),
        (
            "end",
            "float",
            "last packet of its last matched flow, epoch seconds",
            "flows.ts + duration",
        ),
        ("start_utc", "str", "start, readable, ISO 8601 UTC", "start"),
        (
            "first_frame",
            "int",
            "first frame of the matched flows in the capture",
            "flows.first_frame",
        ),
        ("last_frame", "int", "last frame of the matched flows", "flows.last_frame"),
        (
            "score",
            "float",
            "share of the signature's event patterns found in the window (0-1)",
            "computed",
        ),
        ("patterns_matched", "int", "event patterns found", "computed"),
        ("patterns_total", "int", "event patterns in the signature", "signature"),
        (
            "matched_patterns",
            "text",
            "names of the patterns found, in the order seen, ';' between them",
            "signature.pattern",
        ),
        ("missing_patterns", "text", "names of the event patterns not found", "signature.pattern"),
        (
            "out_of_order",
            "text",
            "patterns found, but not in the signature's order (fewest to "
            "leave out for the rest to be in order)",
            "signature.order",
        ),
        ("flows", "text", "uids of the matched flows, ';' between them", "flows.uid"),
        (
            "status",
            "str",
            "detected, or explained (an overlapping occurrence of another event of "
            "the same device accounts for all its flows and is more complete)",
            "computed",
        ),
        ("explained_by", "text", "for status explained: that other event", "computed"),
        ("signature", "text", "signature CSV the event came from", "file name"),
    ),
)

EVALUATION = Table(
    "evaluation",
    _cols(
        (
            "method",
            "str",
            "signature (the learned signatures and event-detector) or ml (a random forest "
            "per device on its units' features, remote party and port)",
            "--method",
        ),
        ("device", "text", "device folder", "EVENTS_DIR/DEVICE"),
        ("event", "text", "event folder", "EVENTS_DIR/DEVICE/EVENT"),
        (
            "protocol",
            "text",
            "baseline: every signature, learned against the device's other "
            "events, on every recording; user: the signature main.py learns with no baseline, "
            "alone, on the held-out recordings of its physical device",
            "--protocol",
        ),
        (
            "status",
            "text",
            "evaluated, no event pattern (it cannot be detected: counted with "
            "F1 0), or failed (no figure; why in note)",
            "computed",
        ),
        ("note", "text", "why the event failed, or what to know about its figure", "computed"),
        ("recordings", "int", "captures of the event", "count"),
        ("train", "int", "captures the signature was learned from", "--train-share, --seed"),
        ("positives", "int", "held-out captures of the event", "count"),
        (
            "negatives",
            "int",
            "strict: held-out captures of the device's other events, and "
            "(baseline protocol) every capture of the other devices or (user protocol) the "
            "held-out captures of the same physical device driven by another app "
            "(folder DeviceApp)",
            "count",
        ),
        ("event_patterns", "int", "event patterns in the learned signature", "signature"),
        ("background_patterns", "int", "patterns also seen in the baseline", "signature"),
        ("tp", "int", "positives in which the event was detected", "event-detector"),
        ("fp", "int", "negatives in which the event was detected", "event-detector"),
        ("tn", "int", "negatives without a detection of the event", "event-detector"),
        ("fn", "int", "positives without a detection of the event", "event-detector"),
        ("precision", "float", "tp / (tp + fp); empty when nothing was detected", "computed"),
        ("recall", "float", "tp / (tp + fn)", "computed"),
        ("f1", "float", "harmonic mean of precision and recall", "computed"),
        (
            "negatives_per_device",
            "int",
            "negatives without the recordings of the same physical "
            "device through another app with the same event name (DeviceApp/EVENT for "
            "Device/EVENT, and the reverse): the same change by another route",
            "count",
        ),
        ("fp_per_device", "int", "fp among negatives_per_device", "event-detector"),
        ("tn_per_device", "int", "tn among negatives_per_device", "event-detector"),
        ("precision_per_device", "float", "tp / (tp + fp_per_device)", "computed"),
        ("f1_per_device", "float", "F1 with precision_per_device (recall is the same)", "computed"),
        (
            "seconds",
            "float",
            "time to learn the signature and run the detector on every test "
            "capture (translation excluded: shared, see the run's total)",
            "computed",
        ),
        (
            "signature",
            "text",
            "the event patterns, in event order, ';' between them",
            "signature.pattern",
        ),
        (
            "signature_csv",
            "text",
            "the learned signature CSV, relative to the output directory",
            "computed",
        ),
    ),
)


WINDOWS = Table(
    "windows",
    _cols(
        (
            "window",
            "str",
            "the cut recording: event-NNN (one per listed time of the event, in time "
            "order), other-NNN (a listed time of another event) or background-NNN, then its "
            "start time",
            "computed",
        ),
        ("kind", "str", "event, other or background", "computed"),
        ("times_file", "text", "the event-times file (event windows)", "--events"),
        ("line", "int", "its line in the times file", "--events"),
        ("listed", "text", "the time as the file writes it", "--events"),
        ("listed_utc", "str", "that time, ISO 8601 UTC", "--events, --timezone"),
        ("event", "text", "the event name the file gives (empty if none)", "--events"),
        (
            "start_utc",
            "str",
            "window start: the listed time minus --time-tolerance",
            "computed",
        ),
        (
            "end_utc",
            "str",
            "window end: the listed time plus its resolution (60 s for a time to the "
            "minute), --time-tolerance and --event-duration",
            "computed",
        ),
        ("flows", "int", "flows that start in the window", "flows CSV"),
        ("packets", "int", "packets in the window (empty without a packets CSV)", "packets CSV"),
        (
            "found_utc",
            "str",
            "where the learned signature finds the event in the window (its first matched "
            "flow); empty if it does not",
            "event-detector",
        ),
        ("offset", "float", "found_utc minus listed_utc, seconds", "computed"),
        (
            "status",
            "text",
            "learned, left out (and why: the recurring patterns are not in it, a wrong "
            "time in the log or an event without traffic), baseline (another event), or "
            "background",
            "computed",
        ),
        ("flows_csv", "text", "the window's flows CSV, beside this file", "computed"),
        ("packets_csv", "text", "the window's packets CSV, beside this file", "computed"),
    ),
)

SCORED_EVENTS = Table(
    "scored events",
    _cols(
        (
            "kind",
            "str",
            "listed (a line of the times file) or detection (a detection matched to no "
            "listed event)",
            "computed",
        ),
        ("line", "int", "line in the times file", "--events"),
        ("event", "text", "event name", "--events / signature.event"),
        ("device", "text", "device named by the times file, or the signature's", "--events"),
        ("listed", "text", "the time as the file writes it", "--events"),
        ("listed_utc", "str", "that time, ISO 8601 UTC", "--events, --timezone"),
        (
            "status",
            "str",
            "found (a detection of the event overlaps its window), missed, no traffic (the "
            "window holds no flow of the device at all: not counted in the recall), outside "
            "(not within any capture given), or false (a detection matched to no listed event)",
            "computed",
        ),
        ("detection_utc", "str", "start of the matched (or false) detection", "detections"),
        ("offset", "float", "detection start minus the listed time, seconds", "computed"),
        ("capture", "text", "capture of the detection", "detections"),
        ("first_frame", "int", "first frame of the detection", "detections"),
    ),
)

_FEATURE_KEYS = _cols(
    ("unit", "str", "flow, uniflow, burst or window (--unit)", "--unit"),
    (
        "uid",
        "text",
        "unit id: a flow's uid in the flows CSV (capture#N); a burst's, its flow's uid, '/', "
        "its number in the flow; capture#uN a uniflow's, capture#wN a window's",
        "computed",
    ),
    _flow_column("capture"),
    _flow_column("ts", "time of the unit's first packet, epoch seconds"),
    _flow_column("duration", "seconds from the unit's first to its last packet"),
    _flow_column("proto", "tcp, udp, ... (empty for a window)"),
    _flow_column("orig_h", "originator address (a uniflow's sender; a window's: the device's)"),
    _flow_column("orig_p"),
    _flow_column("resp_h", "responder address (a uniflow's receiver)"),
    _flow_column("resp_p"),
    ("packets", "int", "packets in the unit", "count"),
    (
        "label",
        "text",
        "--events: the event whose window holds the unit's first packet (a window unit: "
        "that it overlaps), else idle; "
        "--signature: the event of the pattern its flow matches, else idle; empty without",
        "--events / --signature",
    ),
)

FEATURES = Table(
    "features",
    _FEATURE_KEYS,
    notes="Then one float column per value, in this order: with --header `tcp_fin`, "
    "`tcp_syn`, `tcp_rst`, `tcp_psh`, `tcp_ack`, `tcp_urg`, `tcp_ece`, `tcp_cwr` (counts), "
    "`ttl_0`...`ttl_{L-1}` (the first packets' TTL or hop limit, 0 for none and padding); "
    "then per --features type, in the order given: IAT `iat_0`...`iat_{L-2}`, SIZE "
    "`size_0`...`size_{L-1}`, IAT_SIZE `iat_size_0`...`iat_size_{2L-2}`, STATS "
    "`stats_duration`, `stats_pkts_rate`, `stats_bytes_rate`, `stats_mean`, `stats_std`, "
    "`stats_q1`, `stats_q2`, `stats_q3`, `stats_min`, `stats_max`, `stats_num_pkts`, "
    "`stats_num_bytes`, SAMP_NUM `samp_num_0`...`samp_num_{L-2}`, SAMP_SIZE "
    "`samp_size_0`...; with --fft the vector types are named `fft_iat_0`... (L: --length). "
    "features.parquet holds the same table.",
)


def features_table(value_names: list[str]) -> Table:
    """The features CSV of one run: the key columns, then its value columns (floats)."""
    values = [
        Column(name, "float", "feature value (see the features CSV notes)") for name in value_names
    ]
    return Table("features", _FEATURE_KEYS + values, FEATURES.notes)


ALL_TABLES = [
    PACKETS,
    FLOWS,
    BURSTS,
    SIGNATURE,
    INVENTORY,
    DETECTIONS,
    EVALUATION,
    WINDOWS,
    SCORED_EVENTS,
    FEATURES,
]

if __name__ == "__main__":  # print the README's column tables
    for table in ALL_TABLES:
        print(f"### {table.name} CSV\n\n{table.markdown()}\n")
