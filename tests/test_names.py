"""hardway.names: the one place that says what an IP or a DNS name is and how a host is written."""

import pytest

from hardway.names import first_names, host_port, is_dns_label, is_dns_name, is_ip, parse_host, url_host


@pytest.mark.parametrize("host, port, expected", [
    ("10.0.0.1", 6443, "10.0.0.1:6443"),
    ("fd00::1", 6443, "[fd00::1]:6443"),
    ("server.kubernetes.local", "2379", "server.kubernetes.local:2379"),
])
def test_host_port_brackets_ipv6(host, port, expected):
    assert host_port(host, port) == expected
    assert url_host(host) == expected.rsplit(":", 1)[0]


def test_names_and_addresses():
    assert is_ip("10.0.0.1") and is_ip("fd00::1") and not is_ip("node-0")
    assert is_dns_label("node-0") and not is_dns_label("Node") and not is_dns_label("a.b")
    assert is_dns_name("a.b.c") and not is_dns_name("") and not is_dns_name("a..b")
    assert parse_host("fd00::1") == "fd00::1"
    with pytest.raises(ValueError, match="neither an IP address nor"):
        parse_host("fe80::1%eth0")


@pytest.mark.parametrize("names, limit, more, expected", [
    (["a", "b"], 5, " and {n} more", "a, b"),
    (list("abcdefg"), 5, " and {n} more", "a, b, c, d, e and 2 more"),
    (list("abcdefghij"), 8, ", ...", "a, b, c, d, e, f, g, h, ..."),
])
def test_first_names(names, limit, more, expected):
    assert first_names(names, limit, more=more) == expected
