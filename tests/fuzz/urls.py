"""Download links no Document Server hands out: every address class and trick.

Each URL points away from the configured origin, or spells the origin in a
way the fetcher must not accept (user info, a non-canonical port, control
characters). Loopback spellings aim at the trap's port, or at the origin's
port under another name, so a fetcher that let one through would be caught
by the trap or by the guard.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

from hypothesis import strategies as st

__all__ = ["hostile_urls"]

SCHEMES = (
    "https",
    "file",
    "ftp",
    "gopher",
    "dict",
    "ldap",
    "sftp",
    "tftp",
    "jar",
    "netdoc",
    "ws",
    "HTTPS",
    "hxxp",
    "http+unix",
)
PATH = "/cache/files/data/k_1/output.docx/output.docx?md5=c2lnbmVk&expires=9999999999"

# Other spellings of 127.0.0.1 and friends, none the canonical "127.0.0.1".
LOOPBACK = (
    "127.0.0.2",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "017700000001",
    "0177.0.0.1",
    "0177.0.0.01",
    "127.000.000.001",
    "127.0.0.1.",
    "localhost",
    "localhost.",
    "LOCALHOST",
    "localhost.localdomain",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::]",
    "[::ffff:0:127.0.0.1]",
    "0.0.0.0",
    "0",
    "[::]",
    "%31%32%37.0.0.1",
    "127%2e0%2e0%2e1",
    "\u2460\u2461\u2466.0.0.1",
    "127\u30020\u30020\u30021",
    "127.0.0.1\u3002",
    "\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3",
    "127.0.0.1.nip.io",
    "localtest.me",
    "[::1%25lo]",
)
PRIVATE = (
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.1",
    "192.168.0.1",
    "192.168.1.254",
    "100.64.0.1",
    "[fc00::1]",
    "[fd12:3456:789a::1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:192.168.1.1]",
    "012.0.0.1",
    "0xc0a80001",
    "3232235777",
    "intranet",
    "db.internal",
)
METADATA = (
    "169.254.169.254",
    "169.254.170.2",
    "[fd00:ec2::254]",
    "100.100.100.200",
    "[fe80::1]",
    "[fe80::a9fe:a9fe]",
    "[fe80::1%25eth0]",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "metadata.google.internal",
    "metadata",
    "instance-data",
)
ELSEWHERE = (
    "8.8.8.8",
    "1.1.1.1",
    "[2001:4860:4860::8888]",
    "example.com",
    "ds.example.com",
    "255.255.255.255",
    "224.0.0.1",
    "[ff02::1]",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "240.0.0.1",
    "198.18.0.1",
    "[2001:db8::1]",
    "[3fff::1]",
    "[2001::1]",
    "[100::1]",
    "[fec0::1]",
    "0.1.2.3",
)
HOSTS = LOOPBACK + PRIVATE + METADATA + ELSEWHERE


def _spellings(address: ipaddress.IPv4Address) -> list[str]:
    """Ways browsers and inet_aton read ``address``, other than dotted quad."""
    number = int(address)
    octets = list(address.packed)
    return [
        str(number),
        hex(number),
        "0" + oct(number)[2:],
        ".".join("0" + oct(octet)[2:] for octet in octets),
        ".".join(hex(octet) for octet in octets),
        f"{octets[0]}.{number & 0xFFFFFF}",
        f"{octets[0]}.{octets[1]}.{number & 0xFFFF}",
        f"[::ffff:{address}]",
        f"[::{address}]",
    ]


@st.composite
def _random_hosts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        address = draw(st.ip_addresses(v=4))
        assert isinstance(address, ipaddress.IPv4Address)
        spelled = [str(address), *_spellings(address)]
        return draw(st.sampled_from(spelled))
    v6 = draw(st.ip_addresses(v=6))
    return f"[{v6}]"


def _ports(origin_port: int, trap_port: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                f":{trap_port}",
                f":{origin_port}",
                "",
                ":",
                ":0",
                ":80",
                ":443",
                ":22",
                ":6379",
                ":65535",
                ":65536",
                ":99999",
                f":0{origin_port}",
                f":{origin_port}.",
                f":+{origin_port}",
                ":-1",
                f": {origin_port}",
                f":{origin_port}:{trap_port}",
                f":{origin_port + 65536}",
            ]
        ),
        st.integers(1, 65535).map(lambda port: f":{port}"),
    )


@st.composite
def _off_origin(draw: st.DrawFn, origin: str, trap_port: int) -> str:
    """Another host (or a non-canonical spelling of this one) and any port."""
    _, _, port_text = origin.rpartition(":")
    host = draw(st.one_of(st.sampled_from(HOSTS), _random_hosts()))
    port = draw(_ports(int(port_text), trap_port))
    scheme = draw(st.sampled_from(("http", "http", *SCHEMES)))
    if (scheme, host, port) == ("http", "127.0.0.1", f":{port_text}"):
        # That is the origin itself, spelled right: aim at the trap instead.
        port = f":{trap_port}"
    return f"{scheme}://{host}{port}{PATH}"


@st.composite
def _poisoned_origin(draw: st.DrawFn, origin: str, trap_port: int) -> str:
    """The origin itself, spelled with a trick the fetcher must refuse."""
    scheme, _, authority = origin.partition("://")
    host, _, port = authority.rpartition(":")
    evil = draw(st.sampled_from(HOSTS))
    trap = f"127.0.0.1:{trap_port}"
    tricks = [
        f"{scheme}://{authority}@{evil}{PATH}",
        f"{scheme}://{evil}@{authority}{PATH}",
        f"{scheme}://user:pass@{authority}{PATH}",
        f"{scheme}://{authority}@{trap}{PATH}",
        f"{scheme}://{authority}%40{evil}{PATH}",
        f"{scheme}://{authority}\\@{trap}{PATH}",
        f"{scheme}://{trap}#@{authority}{PATH}",
        f"{scheme}://{trap}?@{authority}{PATH}",
        f"{scheme}://{authority}:{trap_port}{PATH}",
        f"{scheme}://{host}:0{port}{PATH}",
        f"{scheme}://{host}.:{port}{PATH}",
        f"{scheme}://[{host}]:{port}{PATH}",
        f"{scheme}://[::ffff:{host}]:{port}{PATH}",
        f"{scheme}:/{authority}{PATH}",
        f"{scheme}:{authority}{PATH}",
        f"{scheme}:///{authority}{PATH}",
        f"//{authority}{PATH}",
        PATH,
        "",
        f"file://{authority}/etc/passwd",
        f"ftp://{authority}{PATH}",
        f"gopher://{authority}/_GET%20{quote(PATH)}",
        f"https://{authority}{PATH}",
        f"{scheme}://{authority}{PATH}#{trap}",
    ]
    url = draw(st.sampled_from(tricks))
    if "#" in url and url.startswith(f"{scheme}://{authority}{PATH}"):
        # Only a fragment after a good URL: still fine on the origin, so poison it.
        url = url.replace(authority, f"{authority}@{trap}", 1)
    # Control characters urlsplit would quietly drop, or spaces.
    if draw(st.booleans()) and url:
        at = draw(st.integers(0, len(url)))
        char = draw(st.sampled_from(["\t", "\n", "\r", " ", "\x00", "\x7f", "\u00a0"]))
        url = url[:at] + char + url[at:]
    return url


def hostile_urls(origin: str, trap_port: int) -> st.SearchStrategy[str]:
    """URLs the guarded fetcher must refuse before it opens a connection."""
    return st.one_of(
        _off_origin(origin, trap_port),
        _poisoned_origin(origin, trap_port),
        st.text(max_size=60),
    )
