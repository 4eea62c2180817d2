"""Where an external address is: its country and its autonomous system (the organisation
that routes it, and the network it announces), from the offline data the geoip2fast
package ships (MaxMind GeoLite2 Country and ASN, converted by geoip2fast). Nothing is looked
up on the network, and an address the data does not know stays empty, never guessed.

geoip2fast keeps its networks as pickled lists of Python integers: 0.33 s and 100 MB to
load in every process. They are turned once into numpy arrays (each network's first
address and prefix length, its country or AS) cached beside the user's other caches, which
load in a few milliseconds and are searched with numpy."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .parties import address_class

# The columns this adds to a table of addresses (the flows CSV's remote_* columns).
COLUMNS = ("remote_country", "remote_network", "remote_org")

_FILE = "geoip2fast-asn-ipv6.dat.gz"  # geoip2fast's data of IPv4 and IPv6 networks
_PRIVATE_COUNTRIES = 16  # geoip2fast's first 16 country entries are reserved ranges
_NOT_KNOWN = {"", "--", "<unknown>", "IANA.ORG"}  # its words for "not known"
_MASK = (1 << 64) - 1
_FORMAT = 1  # of the cached arrays: a new layout, a new file name
_lock = threading.Lock()
_loaded: dict = {}


def _unlocked_in_child() -> None:
    """A worker forked while this process's prefetch thread held the lock would wait on
    it forever (that thread is not in the child): the child starts with its own."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_unlocked_in_child)


def _cache_path() -> Path:
    from importlib.metadata import version

    data = _data_file()
    home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    stamp = f"{version('geoip2fast')}-{data.stat().st_size}-{int(data.stat().st_mtime)}"
    return Path(home) / "iotsig" / f"geo{_FORMAT}-geoip2fast-{stamp}.npz"


def _data_file() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("geoip2fast").origin).parent / _FILE


def _tables() -> dict[str, np.ndarray]:
    """The networks as arrays, from the cache, else built from geoip2fast's data (and
    cached: written whole, by a rename, or not at all)."""
    with _lock:
        if not _loaded:
            path = _cache_path()
            try:
                with np.load(path, allow_pickle=False) as cached:
                    stored = {k: cached[k] for k in cached.files}
            except (OSError, ValueError, zipfile.BadZipFile):  # none yet, or a damaged one
                stored = _built()
                _save(path, stored)
            for kind in ("country", "org"):  # names: one UTF-8 text, a name a line
                text = stored.pop(f"{kind}_names").tobytes().decode()
                stored[f"{kind}_names"] = np.array(text.split("\n"), dtype=object)
            _loaded.update(stored)
    return _loaded


def _save(path: Path, stored: dict) -> None:
    """Write the cache whole (a temporary file renamed) or not at all."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as sink:
            np.savez(sink, **stored)
        os.replace(part, path)
    except OSError:  # a read-only home: built again by the next process
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def prefetch() -> None:
    """Start loading the tables in the background (a command that will need them calls it
    before reading its packets: a first build then overlaps the reading)."""
    if not _loaded and not _lock.locked():
        threading.Thread(target=_tables, name="iotsig-geo", daemon=True).start()


def _built() -> dict[str, np.ndarray]:
    """geoip2fast's lists as arrays: per kind (country, org) and family (v4, v6), each
    network's first address (v6: upper and lower 64 bits), prefix length and entry."""
    with warnings.catch_warnings():  # its regular expressions' escapes (1.2.2)
        warnings.simplefilter("ignore", DeprecationWarning)
        import geoip2fast.geoip2fast as data
        from geoip2fast import GeoIP2Fast

    info = GeoIP2Fast(geoip2fast_data_file=_FILE, verbose=False).get_database_info()
    countries = [n.split(":", 1)[0] for n in data.mainListNamesCountry]
    countries = [n if i >= _PRIVATE_COUNTRIES else "" for i, n in enumerate(countries)]
    tables = {"source": np.array(str(info.get("source_info", "")))}
    for kind, names in (("country", countries), ("org", data.mainListNamesASN)):
        text = "\n".join(n if n not in _NOT_KNOWN else "" for n in names)
        tables[f"{kind}_names"] = np.frombuffer(text.encode(), dtype=np.uint8)
    for kind, firsts, lengths, ids in (
        ("country", data.mainListFirstIP, data.mainListNetlength, data.mainListIDCountryCodes),
        ("org", data.mainListFirstIPASN, data.mainListNetlengthASN, data.mainListIDASN),
    ):
        first = [v for chunk in firsts for v in chunk]
        length = np.array([v for chunk in lengths for v in chunk], dtype=np.uint8)
        ident = np.array([v for chunk in ids for v in chunk], dtype=np.int32)
        v4 = np.array([v < (1 << 32) for v in first])  # IPv4 networks are numbered first
        tables[f"{kind}_v4_start"] = np.array(first[: v4.sum()], dtype=np.uint32)
        hi, lo = _halves(first[v4.sum() :])
        tables[f"{kind}_v6_start_hi"], tables[f"{kind}_v6_start_lo"] = hi, lo
        for family, rows in (("v4", v4), ("v6", ~v4)):
            tables[f"{kind}_{family}_length"] = length[rows]
            tables[f"{kind}_{family}_id"] = ident[rows]
    return tables


def _halves(numbers) -> tuple[np.ndarray, np.ndarray]:
    """Addresses as Python integers -> their upper and lower 64 bits, as uint64 (numpy's
    own conversion of an object array goes through a signed C long)."""
    numbers = [int(n) for n in numbers]
    return (
        np.array([n >> 64 for n in numbers], dtype=np.uint64),
        np.array([n & _MASK for n in numbers], dtype=np.uint64),
    )


@lru_cache(maxsize=1)
def source() -> str:
    """The data's origin and date, as its file says ('MAXMIND:GeoLite2-CountryASN-IPv4IPv6-
    en-20240618'), with the package: 'MaxMind GeoLite2 Country and ASN of 2024-06-18
    (geoip2fast 1.2.2, geoip2fast-asn-ipv6.dat.gz)'."""
    from importlib.metadata import version

    raw = str(_tables()["source"])
    date = raw.rsplit("-", 1)[-1]
    dated = f" of {date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else ""
    origin = "MaxMind GeoLite2 Country and ASN" if "GeoLite2" in raw else raw
    return f"{origin}{dated} (geoip2fast {version('geoip2fast')}, {_FILE})"


def _search(t: dict, kind: str, family: str, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The row of the network holding each address (hi, lo: its upper and lower 64 bits;
    hi is 0 for IPv4), -1 where none does: the last network starting at or before it, if
    it ends at or after it."""
    one = np.uint64(1)
    if family == "v4":
        start_lo = t[f"{kind}_v4_start"].astype(np.uint64)
        row = np.searchsorted(start_lo, lo, "right").astype(np.int64) - 1
        at = np.maximum(row, 0)
        size = one << (np.uint64(32) - t[f"{kind}_v4_length"][at].astype(np.uint64))
        return np.where((row >= 0) & (lo <= start_lo[at] + size - one), row, -1)
    start_hi, start_lo = t[f"{kind}_v6_start_hi"], t[f"{kind}_v6_start_lo"]
    # Sorted by (hi, lo): the last start with a smaller hi, else among those of equal hi.
    left = np.searchsorted(start_hi, hi, "left")
    right = np.searchsorted(start_hi, hi, "right")
    row = left.astype(np.int64) - 1
    for k in np.flatnonzero(right > left):  # (a few distinct IPv6 addresses at most)
        within = np.searchsorted(start_lo[left[k] : right[k]], lo[k], "right")
        row[k] = left[k] + within - 1
    at = np.maximum(row, 0)
    length = t[f"{kind}_v6_length"][at].astype(np.int64)
    wide = length <= 64  # a /64 or wider: its range is in the upper half
    shift = np.where(wide, 64 - length, 128 - length).clip(0, 63).astype(np.uint64)
    end_hi = np.where(wide, start_hi[at] + (one << shift) - one, start_hi[at])
    end_lo = np.where(wide, np.uint64(_MASK), start_lo[at] + (one << shift) - one)
    inside = (hi < end_hi) | ((hi == end_hi) & (lo <= end_lo))
    return np.where((row >= 0) & inside, row, -1)


def lookup(addresses) -> pd.DataFrame:
    """remote_country, remote_network, remote_org of distinct addresses (the index): country code,
    the autonomous system's announced network holding the address, the system's
    organisation. Empty for a private, link-local, multicast, broadcast or reserved address,
    and for one the data does not know."""
    addresses = pd.Index(pd.unique(pd.Series(list(addresses), dtype=object)))
    out = pd.DataFrame("", index=addresses, columns=list(COLUMNS), dtype=object)
    wanted = [a for a in addresses if isinstance(a, str) and address_class(a) == "external"]
    if not wanted:
        return out
    t = _tables()
    addressed = [(a, _address(a)) for a in wanted]
    for family in ("v4", "v6"):
        version = 4 if family == "v4" else 6
        parsed = [(a, int(ip)) for a, ip in addressed if ip is not None and ip.version == version]
        if not parsed:
            continue
        hi, lo = _halves(n for _, n in parsed)
        at = [a for a, _ in parsed]
        country = _search(t, "country", family, hi, lo)
        ids = t[f"country_{family}_id"][np.maximum(country, 0)]
        out.loc[at, "remote_country"] = np.where(country >= 0, t["country_names"][ids], "")
        org = _search(t, "org", family, hi, lo)
        row = np.maximum(org, 0)
        names = np.where(org >= 0, t["org_names"][t[f"org_{family}_id"][row]], "")
        out.loc[at, "remote_org"] = names
        length = t[f"org_{family}_length"][row]
        if family == "v4":
            firsts = [ipaddress.IPv4Address(int(v)) for v in t["org_v4_start"][row]]
        else:
            firsts = [
                ipaddress.IPv6Address((int(h) << 64) | int(v))
                for h, v in zip(t["org_v6_start_hi"][row], t["org_v6_start_lo"][row])
            ]
        out.loc[at, "remote_network"] = [
            f"{first}/{n}" if name else "" for first, n, name in zip(firsts, length, names)
        ]
    return out


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:  # (address_class calls any other text external)
        return None


def columns_for(addresses: np.ndarray) -> dict[str, np.ndarray]:
    """COLUMNS for each of `addresses` (an address per row), looked up once per distinct
    address and spread back by its codes."""
    codes, uniques = pd.factorize(np.asarray(addresses, dtype=object))
    found = lookup(uniques)
    out = {}
    for column in COLUMNS:
        values = np.append(found[column].to_numpy(dtype=object), "")
        out[column] = values[codes]  # code -1 (a missing address) takes the appended ""
    return out


def where(country: str, org: str) -> str:
    """'US, GOOGLE': how a page or pattern.txt says where an address is ('' unknown)."""
    return ", ".join(part for part in (country, org) if part)
