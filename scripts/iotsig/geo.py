"""Where an external address is: its country and its autonomous system (the organisation
that routes it, and the network it announces), from the offline data the geoip2fast
package ships (MaxMind GeoLite2 Country and ASN, converted by geoip2fast). Nothing is looked
up on the network, and an address the data does not know stays empty, never guessed."""

from __future__ import annotations

import threading
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd

from .parties import address_class

# The columns this adds to a table of addresses (the flows CSV's remote_* columns).
COLUMNS = ("remote_country", "remote_asn", "remote_org")

# geoip2fast's data file of IPv4 and IPv6 networks (0.26 s to load, 0.07 s more to import
# the package): loaded once per process, in a thread started early (prefetch) where a
# command knows it will need it, so that the load overlaps reading the packets.
_FILE = "geoip2fast-asn-ipv6.dat.gz"
_loaded: dict = {}
_lock = threading.Lock()


def _load() -> None:
    with _lock:
        if "database" not in _loaded:
            with warnings.catch_warnings():  # its regular expressions' escapes (1.2.2)
                warnings.simplefilter("ignore", DeprecationWarning)
                from geoip2fast import GeoIP2Fast

            _loaded["database"] = GeoIP2Fast(geoip2fast_data_file=_FILE, verbose=False)


def prefetch() -> None:
    """Start loading the data in the background (it holds the GIL about half the time:
    worth it beside a CSV read by Arrow, which does not)."""
    if "database" not in _loaded and not _lock.locked():
        threading.Thread(target=_load, name="iotsig-geo", daemon=True).start()


def _database():
    _load()  # waits for a load in progress
    return _loaded["database"]


@lru_cache(maxsize=1)
def source() -> str:
    """The data's origin and date, as its file says (e.g. 'MAXMIND:GeoLite2-CountryASN-
    IPv4IPv6-en-20240618'), with the package version: 'MaxMind GeoLite2 Country and ASN of
    2024-06-18 (geoip2fast 1.2.2)'."""
    from importlib.metadata import version

    info = _database().get_database_info()
    raw = str(info.get("source_info", ""))
    date = raw.rsplit("-", 1)[-1]
    dated = f" of {date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else ""
    origin = "MaxMind GeoLite2 Country and ASN" if "GeoLite2" in raw else raw
    return f"{origin}{dated} (geoip2fast {version('geoip2fast')}, {_FILE})"


def _known(text: str) -> str:
    """geoip2fast's answer for what it does not know ('--', '<not found in database>',
    'IANA.ORG' for reserved ranges) as empty."""
    text = str(text or "")
    return "" if text in ("--", "IANA.ORG") or text.startswith("<") else text


def lookup(addresses) -> pd.DataFrame:
    """remote_country, remote_asn, remote_org of distinct addresses (the index): country code,
    the autonomous system's announced network holding the address, the system's
    organisation. Empty for a private, link-local, multicast, broadcast or reserved address,
    and for one the data does not know."""
    addresses = pd.Index(pd.unique(pd.Series(list(addresses), dtype=object)))
    out = pd.DataFrame("", index=addresses, columns=list(COLUMNS), dtype=object)
    wanted = [a for a in addresses if isinstance(a, str) and address_class(a) == "external"]
    if not wanted:
        return out
    database = _database()
    rows = []
    for address in wanted:  # one call per distinct address: a few thousand at most
        found = database.lookup(address)
        known = not found.is_private and _known(found.country_code) != ""
        org = _known(found.asn_name)
        rows.append(
            (
                _known(found.country_code) if known else "",
                found.asn_cidr if org and not found.is_private else "",
                org if not found.is_private else "",
            )
        )
    out.loc[wanted, list(COLUMNS)] = rows
    return out


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
