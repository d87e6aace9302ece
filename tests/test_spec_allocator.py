"""Property tests of the worker pod-range allocator, against a brute-force model.

The model walks every /size range of podCIDR in address order and hands each worker without an
explicit range the first one that overlaps no explicit range: exactly what "allocated in node
order, skipping explicit ones" means. The allocator must agree with it, and when it runs out it
must say how many ranges fit.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hardway import spec
from hardway.errors import SpecError
from hardway.spec import PodRangeShortage, allocate_pod_ranges

Network = IPv4Network | IPv6Network
MAX_RANGES_BITS = 7  # at most 128 node ranges per podCIDR keeps the brute-force model quick


@st.composite
def layouts(draw, family: int | None = None):
    """(podCIDR, size, wanted): wanted is one entry per worker, an explicit range or None."""
    family = family or draw(st.sampled_from([4, 6]))
    bits = 32 if family == 4 else 128
    prefix = draw(st.integers(min_value=1 if family == 4 else 8, max_value=bits - 3))
    size = draw(st.integers(min_value=prefix + 1, max_value=min(prefix + MAX_RANGES_BITS, bits - 2)))
    base = draw(st.integers(min_value=0, max_value=2 ** bits - 1))
    cls = IPv4Network if family == 4 else IPv6Network
    pod_cidr = cls((base >> (bits - prefix) << (bits - prefix), prefix))
    capacity = 2 ** (size - prefix)
    workers = draw(st.integers(min_value=0, max_value=capacity + 3))
    # explicit ranges: random subnets of podCIDR of any size from prefix+1 down to size+2, kept disjoint
    explicit: list[Network] = []
    for _ in range(draw(st.integers(min_value=0, max_value=min(workers, 6)))):
        sub = draw(st.integers(min_value=prefix + 1, max_value=min(size + 2, bits)))
        index = draw(st.integers(min_value=0, max_value=2 ** (sub - prefix) - 1))
        candidate = cls((int(pod_cidr.network_address) + (index << (bits - sub)), sub))
        if not any(candidate.overlaps(e) for e in explicit):
            explicit.append(candidate)
    slots = draw(st.permutations(range(workers)))[: len(explicit)] if workers else []
    wanted: list[Network | None] = [None] * workers
    for slot, net in zip(slots, explicit):
        wanted[slot] = net
    return pod_cidr, size, wanted


def model(pod_cidr: Network, size: int, wanted: list[Network | None]) -> tuple[list[Network] | None, int]:
    """Brute force: the allocation (None when short) and how many /size ranges are free."""
    explicit = [w for w in wanted if w is not None]
    free = [s for s in pod_cidr.subnets(new_prefix=size) if not any(s.overlaps(e) for e in explicit)]
    if wanted.count(None) > len(free):
        return None, len(free)
    it = iter(free)
    return [w if w is not None else next(it) for w in wanted], len(free)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_allocator_matches_the_model(layout):
    pod_cidr, size, wanted = layout
    expected, free = model(pod_cidr, size, wanted)
    if expected is None:
        with pytest.raises(PodRangeShortage) as raised:
            allocate_pod_ranges(pod_cidr, size, wanted)
        message = str(raised.value)
        assert f"room for {2 ** (size - pod_cidr.prefixlen)} " in message
        if any(w is not None for w in wanted):
            assert f"leaves {free} " in message
        else:
            assert f"{len(wanted)} workers" in message
        assert any(fix in message for fix in ("a larger podCIDR", "a longer nodePodCIDRSize", "split")), message
        return
    got = allocate_pod_ranges(pod_cidr, size, wanted)
    assert got == expected
    # and the properties, stated directly
    assert len(got) == len(wanted)
    for w, g in zip(wanted, got):
        assert g.subnet_of(pod_cidr)
        if w is not None:
            assert g == w  # explicit kept
        else:
            assert g.prefixlen == size
    for i in range(len(got)):
        for j in range(i):
            assert not got[i].overlaps(got[j]), (got[i], got[j])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(family=4))
def test_loaded_spec_allocates_like_the_model(layout):
    """The same through spec.loads: nodes live outside podCIDR and serviceCIDR (in other ranges)."""
    pod_cidr, size, wanted = layout
    service = ipaddress.ip_network("192.168.255.0/24")
    assume(not pod_cidr.overlaps(service))
    node_net = next(n for n in (ipaddress.ip_network(x) for x in ("100.64.0.0/16", "198.18.0.0/16", "172.31.0.0/16"))
                    if not n.overlaps(pod_cidr))
    hosts = node_net.hosts()
    nodes = [{"name": "ctl", "address": str(next(hosts)), "roles": ["controller"]}]
    for i, w in enumerate(wanted):
        node = {"name": f"w{i}", "address": str(next(hosts)), "roles": ["worker"]}
        if w is not None:
            node["podCIDR"] = str(w)
        nodes.append(node)
    text = yaml.safe_dump({"name": "prop", "network": {"podCIDR": str(pod_cidr), "nodePodCIDRSize": size,
                                                        "serviceCIDR": str(service)}, "nodes": nodes})
    expected, free = model(pod_cidr, size, wanted)
    if expected is None:
        with pytest.raises(SpecError) as raised:
            spec.loads(text)
        assert len(raised.value.problems) == 1
        assert "network.podCIDR" in str(raised.value)
        assert f"room for {2 ** (size - pod_cidr.prefixlen)} " in str(raised.value)
    else:
        c = spec.loads(text)
        assert [n.pod_cidr for n in c.workers] == expected
        assert c.node("ctl").pod_cidr is None


def test_shortage_message_suggests_sizes_that_fit():
    # 10.0.0.0/24 cut into /26 holds 4; 5 workers need 8 ranges: a /23 of /26, or /27 in the /24
    with pytest.raises(PodRangeShortage) as raised:
        allocate_pod_ranges(ipaddress.ip_network("10.0.0.0/24"), 26, [None] * 5)
    message = str(raised.value)
    assert "room for 4 " in message and "5 workers" in message
    assert "/23" in message and "27" in message
    assert raised.value.free == 4 and raised.value.needing == 5


def test_large_space_is_not_enumerated():
    """An IPv6 /32 holds 2**32 /64s: allocation must stay lazy."""
    got = allocate_pod_ranges(ipaddress.ip_network("fd00::/32"), 64, [None, ipaddress.ip_network("fd00:0:0:1::/64"), None])
    assert [str(g) for g in got] == ["fd00::/64", "fd00:0:0:1::/64", "fd00:0:0:2::/64"]


@pytest.mark.parametrize("size", [66, 70, 126])
def test_allocation_is_not_exponential_in_an_explicit_range(size):
    """fd00::/48 with one worker on an explicit fd00::/49 and one without: the free range is the
    first of the upper half, found without walking the 2**(size-49) ranges of the explicit one."""
    import time
    pod_cidr = IPv6Network("fd00::/48")
    start = time.monotonic()
    got = allocate_pod_ranges(pod_cidr, size, [IPv6Network("fd00::/49"), None])
    assert got == [IPv6Network("fd00::/49"), IPv6Network((int(IPv6Network("fd00:0:0:8000::/49").network_address), size))]
    assert time.monotonic() - start < 1
