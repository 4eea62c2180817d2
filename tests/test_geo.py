"""Country and autonomous system of external addresses (iotsig.geo: the offline data geoip2fast
ships) in the flows CSV, pattern.txt and the report."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from iotsig import csvio, geo
from iotsig.schema import FLOWS

from conftest import SHARED, run_script

EVENTS = SHARED / "pcaps" / "events"
LONG = SHARED / "pcaps" / "long"

# What the shipped data (MaxMind GeoLite2 of 2024-06-18, in geoip2fast 1.2.2) says of a few
# well-known public addresses: public DNS resolvers. GeoLite2 places 1.1.1.1 in Australia
# (the APNIC research prefix it belongs to), not where Cloudflare is.
KNOWN = {
    "8.8.8.8": ("US", "8.8.8.0/24", "GOOGLE"),
    "2001:4860:4860::8888": ("US", "2001:4860:4840::/42", "GOOGLE"),
    "1.1.1.1": ("AU", "1.1.1.0/24", "CLOUDFLARENET"),
    "9.9.9.9": ("US", "9.9.9.0/24", "QUAD9-AS-1"),
}
# Never placed: private, link-local, multicast, broadcast, shared (CGNAT), reserved,
# unspecified; text that is no address.
NOWHERE = [
    "192.168.1.1",
    "10.0.0.1",
    "172.16.0.1",
    "169.254.1.1",
    "fe80::1",
    "224.0.0.251",
    "ff02::fb",
    "255.255.255.255",
    "100.64.0.1",
    "240.0.0.1",
    "0.0.0.0",
    "::",
    "50:c7:bf:ed:0a:54",
    "",
    "not an address",
]


def test_well_known_addresses():
    found = geo.lookup(KNOWN)
    for address, expected in KNOWN.items():
        assert tuple(found.loc[address, list(geo.COLUMNS)]) == expected, address


@pytest.mark.parametrize("address", NOWHERE)
def test_local_and_reserved_addresses_are_empty(address):
    assert tuple(geo.lookup([address]).loc[address]) == ("", "", "")


def test_columns_spread_back_per_row():
    """One value per row, looked up once per distinct address, a missing one empty."""
    rows = pd.Series(["8.8.8.8", "192.168.1.1", None, "8.8.8.8", "1.1.1.1"], dtype=object)
    found = geo.columns_for(rows.to_numpy())
    assert list(found["remote_country"]) == ["US", "", "", "US", "AU"]
    assert list(found["remote_org"]) == ["GOOGLE", "", "", "GOOGLE", "CLOUDFLARENET"]


def test_source_names_the_data_and_its_date():
    assert geo.source().startswith("MaxMind GeoLite2 Country and ASN of 2024-06-18 (geoip2fast ")


def external_flows(folder) -> pd.DataFrame:
    frames = [
        csvio.read_table(path, FLOWS, columns=["remote_h", "remote_class", *geo.COLUMNS])
        for path in sorted(folder.glob("*.flows.csv"))
    ]
    flows = pd.concat(frames, ignore_index=True).fillna("")
    return flows[flows["remote_class"] == "external"]


def assert_all_placed(flows: pd.DataFrame) -> None:
    """Every external flow has a country and an organisation, but where the data itself
    (asked directly, not through iotsig) knows neither."""
    unplaced = flows[(flows["remote_country"] == "") | (flows["remote_org"] == "")]
    with warnings.catch_warnings():  # (its regular expressions' escapes)
        warnings.simplefilter("ignore", DeprecationWarning)
        from geoip2fast import GeoIP2Fast

    database = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz")
    for address in unplaced["remote_h"].unique():
        answer = database.lookup(address)
        assert answer.is_private or answer.country_code == "--", (address, answer.to_dict())


def test_demo_flows_and_pattern_say_where(plug_toggle):
    output, _ = plug_toggle
    flows = external_flows(output)
    assert len(flows)
    assert set(flows["remote_country"]) == {"US"}
    assert set(flows["remote_org"]) == {"AMAZON-AES"}
    assert_all_placed(flows)
    text = (output / "pattern.txt").read_text()
    assert "   where: US, AMAZON-AES\n" in text
    page = (output / "report.html").read_text()
    assert "MaxMind GeoLite2 Country and ASN of 2024-06-18" in page
    assert '<td>US</td><td class="wrap">AMAZON-AES</td>' in page


@pytest.mark.slow
@pytest.mark.skipif(not EVENTS.is_dir() or not LONG.is_dir(), reason="no ../shared/pcaps")
def test_every_shared_external_flow_is_placed(tmp_path):
    captures = sorted(EVENTS.rglob("*.pcap")) + sorted(LONG.glob("*.pcap"))
    run_script("packet-translator.py", *captures, "-o", tmp_path, "-q")
    run_script("stream-identifier.py", *tmp_path.glob("*.packets.csv"), "-o", tmp_path, "-q")
    flows = external_flows(tmp_path)
    assert len(flows) > 4000 and flows["remote_h"].nunique() > 200
    assert_all_placed(flows)


def test_the_arrays_answer_as_geoip2fast_does():
    """geo's arrays (built once from geoip2fast's lists, cached) against geoip2fast's own
    lookup: random IPv4 addresses (its IPv4 file, whose lookup checks each network's end),
    and IPv6 addresses inside its networks."""
    import ipaddress
    import random

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from geoip2fast import GeoIP2Fast

    rng = random.Random(7)
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(3000)]
    tables = geo._tables()
    rows = rng.sample(range(len(tables["org_v6_start_hi"])), 300)
    v6 = [
        str(
            ipaddress.IPv6Address(
                (int(tables["org_v6_start_hi"][i]) << 64 | int(tables["org_v6_start_lo"][i]))
                + rng.getrandbits(8)
            )
        )
        for i in rows
    ]
    # geoip2fast keeps its data in module globals: one file loaded at a time. Countries from
    # the IPv4+IPv6 file (the IPv4 file's list has one reserved entry fewer, and geoip2fast
    # takes its 16th country, Andorra, for reserved); whether a network holds an IPv4
    # address, and its AS, from the IPv4 file (the other does not check a network's end).
    external = [a for a in v4 + v6 if geo.address_class(a) == "external"]
    database = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz")
    places = {a: database.lookup(a) for a in external}
    database = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz")
    networks = {a: database.lookup(a) if ":" not in a else places[a] for a in external}
    found = geo.lookup(external)
    for address in external:
        place, answer = places[address], networks[address]
        in_network = not answer.country_name.startswith("<") and not place.is_private
        org = answer.asn_name if answer.asn_name not in ("<unknown>", "", "IANA.ORG") else ""
        expected = (place.country_code if in_network else "", answer.asn_cidr if org else "", org)
        assert tuple(found.loc[address]) == expected, address
    assert np.all(np.diff(tables["country_v4_start"].astype(np.int64)) > 0)


@pytest.mark.slow  # (1 s: builds the arrays in a process of its own)
def test_no_writable_cache_still_answers(tmp_path):
    """Where the cache cannot be written (a read-only home), the arrays are built in the
    process and the answers are the same."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result = run_script_code(
        "from iotsig import geo; print(geo.lookup(['8.8.8.8']).loc['8.8.8.8'].tolist())",
        env={"XDG_CACHE_HOME": str(blocked)},
    )
    assert result.stdout.strip() == "['US', '8.8.8.0/24', 'GOOGLE']"


def run_script_code(code: str, env: dict):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )


@pytest.mark.slow  # (rebuilds the cache: 2.5 s)
def test_a_damaged_cache_is_built_again(tmp_path):
    """A cache file cut short (iotsig writes it by a rename, so never so; a copy may be) is
    built again and replaced, not trusted."""
    run_script_code(
        "from iotsig import geo; geo.lookup(['8.8.8.8'])", {"XDG_CACHE_HOME": str(tmp_path)}
    )
    (cached,) = (tmp_path / "iotsig").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])
    result = run_script_code(
        "from iotsig import geo; print(geo.lookup(['8.8.8.8']).loc['8.8.8.8'].tolist())",
        {"XDG_CACHE_HOME": str(tmp_path)},
    )
    assert result.stdout.strip() == "['US', '8.8.8.0/24', 'GOOGLE']"
    assert cached.stat().st_size > 1_000_000
    assert [p.name for p in (tmp_path / "iotsig").iterdir()] == [cached.name]  # no .part left


def test_a_worker_forked_while_the_data_loads_does_not_wait_forever():
    """parallel.py forks its workers; one forked while this process's prefetch thread holds
    geo's lock (that thread is not in the child) loads the data itself."""
    code = """
import os, signal
from iotsig import geo
geo._lock.acquire()  # as a prefetch thread loading at the fork holds it
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # (a child waiting on the inherited lock dies here)
    print(geo.lookup(["8.8.8.8"]).loc["8.8.8.8"].tolist(), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(status)
"""
    result = run_script_code(code, {})
    assert result.stdout.split("\n")[:2] == ["['US', '8.8.8.0/24', 'GOOGLE']", "0"]
