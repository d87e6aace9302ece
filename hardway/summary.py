"""`validate`'s report: what the spec describes, with every derived value."""

from rich.markup import escape
from rich.table import Table

from .durations import format_duration
from .output import console
from .spec import Cluster


def print_summary(cluster: Cluster) -> None:
    c = cluster
    console.print(f"[bold]{escape(c.name)}[/]: valid ({escape(c.source)})")
    facts = Table.grid(padding=(0, 2))
    for key, value in [
        ("Kubernetes", str(c.version)),
        ("API", f"{c.api_url} (controllers use {c.local_api_url})"),
        ("service CIDR", f"{c.service_cidr} (kubernetes Service {c.kubernetes_service_ip}, cluster DNS {c.cluster_dns})"),
        ("pod CIDR", f"{c.pod_cidr} (one /{c.node_pod_cidr_size} per worker)"),
        ("cluster domain", c.cluster_domain),
        ("PKI", f"{c.key_algorithm}, CAs {format_duration(c.ca_validity)}, certificates {format_duration(c.cert_validity)}"),
        ("encryption at rest", c.encryption_provider),
        ("etcd members", c.etcd_initial_cluster),
        ("nodes", f"{len(c.controllers)} controller(s), {len(c.workers)} worker(s), {len(c.loadbalancers)} load balancer(s)"),
    ]:
        facts.add_row(f"[dim]{key}[/]", escape(value))
    console.print(facts)
    shown = c.nodes if len(c.nodes) <= 50 else c.nodes[:20]
    table = Table("node", "address", "roles", "fqdn", "pod range", box=None)
    for n in shown:
        table.add_row(*(escape(v) for v in (n.name, str(n.address), ",".join(sorted(n.roles)), n.fqdn or "",
                                             str(n.pod_cidr or ""))))
    console.print(table)
    if len(shown) < len(c.nodes):
        console.print(f"[dim]... and {len(c.nodes) - len(shown)} more nodes[/]")
