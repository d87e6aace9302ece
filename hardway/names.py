"""Names and addresses: what is an IP, what is a DNS name, and how a host is written in a URL.

Every stage asks these questions (the spec validates, the catalog picks SAN types, rendering writes
URLs and hosts lines, the lab probes endpoints); this is the one place that answers them.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_RULE = "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
SUBDOMAIN_RULE = "a DNS name: dot-separated DNS-1123 labels, at most 253 characters"


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address (SANs and endpoints are either an IP or a DNS name)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL.fullmatch(value))  # fullmatch: '$' would let "a\n" through


def is_dns_name(value: str) -> bool:
    return 0 < len(value) <= 253 and all(is_dns_label(p) for p in value.split("."))


def url_host(host: str) -> str:
    """The host as it appears in a URL or host:port (an IPv6 address in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def host_port(host: str, port: int | str) -> str:
    """host:port, with an IPv6 address in brackets: "[fd00::1]:6443"."""
    return f"{url_host(str(host))}:{port}"


def parse_address(value: str) -> IPAddress:
    """An IPv4 or IPv6 address without a zone, or a ValueError saying what `value` is not."""
    try:
        if "%" in value:  # a zone (fe80::1%eth0) means nothing to other machines
            raise ValueError
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def parse_network(value: str) -> IPNetwork:
    """A CIDR without host bits, or a ValueError with the fix."""
    if "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR; write address/prefix, e.g. 10.200.0.0/16")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            base = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; the network is {base}") from None
        raise ValueError(f"{value!r} is not a CIDR; write address/prefix, e.g. 10.200.0.0/16") from None


def parse_host(value: str) -> str:
    """A DNS name or an IP address (as a SAN or an endpoint), as written."""
    try:
        parse_address(value)
        return value
    except ValueError:
        pass
    if not is_dns_name(value):
        raise ValueError(f"{value!r} is neither an IP address nor {SUBDOMAIN_RULE}")
    return value


def not_a_label(value: str, node: bool = False) -> str:
    """Why `value` is not a DNS-1123 label, for the message."""
    if not value:
        reason = "it is empty"
    elif len(value) > 63:
        reason = f"it has {len(value)} characters"
    elif value != value.lower():
        reason = "it has uppercase letters"
    elif "." in value:
        reason = "it has '.'"
    elif bad := sorted({ch for ch in value if not (ch.isascii() and (ch.isalnum() or ch == "-"))}):
        reason = "it has " + ", ".join(repr(ch) for ch in bad)
    else:
        reason = "it starts or ends with '-'"
    hint = "; a full DNS name goes in fqdn" if node and "." in value else ""
    return f"{value!r} is not a DNS-1123 label ({reason}); allowed: {LABEL_RULE.split(': ', 1)[1]}{hint}"


def first_names(names, limit: int = 5, more: str = " and {n} more") -> str:
    """The first `limit` names, then `more` (with {n}, how many were left out) if there are others:
    "a, b, c, d, e and 3 more", or with more=", ..." "a, b, c, d, e, ..."."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (more.format(n=len(names) - limit) if len(names) > limit else "")
