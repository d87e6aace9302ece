"""The performance table of issue 12: every figure through the real `hardway` command line, in fresh
processes, one after another, with the floor measured in the same run.

    python benchmarks/bench.py                       # 100, 1000 and 5000 workers (ECDSA-P256); RSA floor at 100
    python benchmarks/bench.py --workers 100,1000    # fewer sizes (the scaling rows need 1000 and 5000)
    python benchmarks/bench.py --json                # the measurements as JSON

Rows (the spec: benchmarks/make_large.py, 3 controllers, 1 load balancer, N workers, ECDSA-P256):
- `hardway pki`, first run into an empty store (on disk, and with the store on tmpfs), and again with
  nothing to do;
- `hardway pki` with RSA-2048 and 100 workers against the floor: the same number of RSA-2048 key
  generations and signatures by the CA key, on every core, measured in the same run (the floor of
  bench_pki.py, `keygen_sign_floor`);
- `hardway bundle`, first run with the PKI already there, and again with nothing to do;
- one worker added to the spec, then `hardway bundle` (how many archives it rewrote);
- the bytes of all bundles together, and of what is in them outside the shared route/hosts table
  (uncompressed member bytes), which must grow no faster than the node count;
- the peak RSS of any of these runs (the process and the children it waited for);
- `hardway --version` (start-up), best of five.

A benchmark, not a test: the figures depend on the machine and its load (printed with the table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pki import keygen_sign_floor  # noqa: E402
from make_large import large_spec  # noqa: E402

# Members of a bundle that hold the cluster's route/hosts table: the one part of a node's bundle that
# grows with the other nodes (docs/bundles.md). Matched on the member's path inside the archive.
SHARED_TABLE_SUFFIXES = ("/cluster-nodes.tsv",)

GOALS = {
    "pki_first": "≤ 1.2 s", "pki_noop": "≤ 0.6 s", "rsa_ratio": "≤ 1.10×", "bundle_first": "≤ 5 s",
    "bundle_noop": "≤ 1.0 s", "add_worker": "≤ 3 s", "bytes": "≤ 15 MB", "rss": "≤ 150 MB, flat",
    "start": "≤ 0.25 s",
}


def hardway(*argv: str) -> tuple[float, int, str]:
    """Run `python -m hardway ARGV`; (seconds, peak RSS in bytes of it and its waited-for children, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hardway", *argv], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this run's own rusage (maxrss: it or a child it waited for)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"hardway {' '.join(argv)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024, stdout


def spec_file(tmp: Path, workers: int, algorithm: str = "ECDSA-P256", extra: int = 0) -> Path:
    text = large_spec(workers + extra)
    if workers + extra > 4000:  # a /12 holds 4096 node /24s: give 5000 workers a /11
        text = text.replace("podCIDR: 10.192.0.0/12", "podCIDR: 10.192.0.0/11")
    text = text.replace("keyAlgorithm: ECDSA-P256", f"keyAlgorithm: {algorithm}")
    path = tmp / f"spec-{workers + extra}-{algorithm}.yaml"
    path.write_text(text)
    return path


def store_keys(store: Path) -> int:
    """Keys the PKI run generated: every private key file in the store."""
    return sum(1 for p in store.rglob("*.key") if p.is_file())


def bundle_bytes(bundles: Path) -> tuple[int, int, int]:
    """(archive bytes, uncompressed member bytes outside the shared table, member bytes of the table)."""
    archives = outside = table = 0
    for path in sorted(bundles.glob("*.tar.gz")):
        archives += path.stat().st_size
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile():
                    if m.name.endswith(SHARED_TABLE_SUFFIXES):
                        table += m.size
                    else:
                        outside += m.size
    return archives, outside, table


def digests(bundles: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundles.glob("*.tar.gz")}


def size_case(tmp: Path, workers: int) -> dict:
    spec = spec_file(tmp, workers)
    out = tmp / f"out-{workers}"
    row: dict = {"workers": workers}
    rss = []
    row["pki_first"], r, _ = hardway("pki", "--spec", str(spec), "--out", str(out)); rss.append(r)
    row["pki_noop"], r, _ = hardway("pki", "--spec", str(spec), "--out", str(out)); rss.append(r)
    row["bundle_first"], r, _ = hardway("bundle", "--spec", str(spec), "--out", str(out)); rss.append(r)
    row["bundle_noop"], r, _ = hardway("bundle", "--spec", str(spec), "--out", str(out)); rss.append(r)
    row["bytes"], row["bytes_outside_table"], row["bytes_table"] = bundle_bytes(out / "bundles")
    row["bundles"] = len(list((out / "bundles").glob("*.tar.gz")))
    before = digests(out / "bundles")
    bigger = spec_file(tmp, workers, extra=1)
    row["add_worker"], r, _ = hardway("bundle", "--spec", str(bigger), "--out", str(out)); rss.append(r)
    after = digests(out / "bundles")
    row["add_worker_rewrote"] = sum(1 for name, d in after.items() if before.get(name) != d)
    row["rss"] = max(rss)
    row["pki_first_tmpfs"] = pki_first_on_tmpfs(spec)
    return row


def pki_first_on_tmpfs(spec: Path) -> float | None:
    """The first `pki` run with the store in memory (/dev/shm): the program's own cost, without the
    disk's file creation (on an ext4 that just freed thousands of inodes, creating the store's 4000
    files and 1000 directories can take seconds of kernel time)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    with tempfile.TemporaryDirectory(prefix="hardway-bench-", dir=shm) as tmp:
        return hardway("pki", "--spec", str(spec), "--out", str(Path(tmp) / "out"))[0]


def rsa_case(tmp: Path, workers: int = 100) -> dict:
    spec = spec_file(tmp, workers, algorithm="RSA-2048")
    out = tmp / f"out-rsa-{workers}"
    elapsed, rss, _ = hardway("pki", "--spec", str(spec), "--out", str(out))
    keys = store_keys(out / "pki")
    floor = keygen_sign_floor("RSA-2048", keys)  # the same floor as bench_pki.py
    return {"workers": workers, "keys": keys, "pki_first": elapsed, "floor": floor, "ratio": elapsed / floor, "rss": rss}


def start_up() -> float:
    return min(hardway("--version")[0] for _ in range(5))


def table(rows: list[dict], rsa: dict | None, start: float, load: tuple[float, float]) -> str:
    mb = 1e6
    by = {r["workers"]: r for r in rows}
    main = by.get(1000) or rows[-1]
    n = main["workers"]
    lines = ["| row | measured | goal |", "|---|---|---|"]
    lines.append(f"| `hardway pki`, first run ({n} workers) | {main['pki_first']:.2f} s | {GOALS['pki_first']} |")
    if main.get("pki_first_tmpfs") is not None:
        lines.append(f"| `hardway pki`, first run, the store on tmpfs (/dev/shm: no disk) | {main['pki_first_tmpfs']:.2f} s | "
                     f"{GOALS['pki_first']} |")
    lines.append(f"| `hardway pki`, nothing to do | {main['pki_noop']:.2f} s | {GOALS['pki_noop']} |")
    if rsa:
        lines.append(f"| `hardway pki`, RSA-2048, {rsa['workers']} workers ({rsa['keys']} keys): {rsa['pki_first']:.2f} s "
                     f"vs. keygen+sign floor on all cores {rsa['floor']:.2f} s | {rsa['ratio']:.2f}× | {GOALS['rsa_ratio']} |")
    lines.append(f"| `hardway bundle`, first run (PKI already there) | {main['bundle_first']:.2f} s | {GOALS['bundle_first']} |")
    lines.append(f"| `hardway bundle`, nothing to do | {main['bundle_noop']:.2f} s | {GOALS['bundle_noop']} |")
    lines.append(f"| add one worker, then `hardway bundle` | {main['add_worker']:.2f} s, rewrites "
                 f"{main['add_worker_rewrote']} of {main['bundles'] + 1} archives | {GOALS['add_worker']} |")
    lines.append(f"| all bundles together | {main['bytes'] / mb:.1f} MB | {GOALS['bytes']} |")
    peak = max(r["rss"] for r in rows + ([rsa] if rsa else []))
    per_size = ", ".join(f"{r['workers']} workers: {r['rss'] / mb:.0f}" for r in rows)
    lines.append(f"| peak RSS (any run above) | {peak / mb:.0f} MB ({per_size}) | {GOALS['rss']} |")
    lines.append(f"| `hardway --version` (start-up, best of 5) | {start:.2f} s | {GOALS['start']} |")
    out = ["\n".join(lines), ""]
    head = ["workers", "pki first s", "pki no-op s", "bundle first s", "bundle no-op s", "add one worker s",
            "archives MB", "member bytes outside the table MB", "table member bytes MB", "peak RSS MB"]
    scale = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        scale.append("| " + " | ".join([str(r["workers"]), f"{r['pki_first']:.2f}", f"{r['pki_noop']:.2f}",
                                        f"{r['bundle_first']:.2f}", f"{r['bundle_noop']:.2f}", f"{r['add_worker']:.2f}",
                                        f"{r['bytes'] / mb:.1f}", f"{r['bytes_outside_table'] / mb:.1f}",
                                        f"{r['bytes_table'] / mb:.1f}", f"{r['rss'] / mb:.0f}"]) + " |")
    out.append("\n".join(scale))
    ratios = []
    for small, big in ((100, 1000), (1000, 5000)):
        if small in by and big in by:
            a, b = by[small], by[big]
            f = big / small
            ratios.append(f"- {big} vs {small} workers (node count ×{f:g}): pki first ×{b['pki_first'] / a['pki_first']:.2f}, "
                          f"bundle first ×{b['bundle_first'] / a['bundle_first']:.2f}, "
                          f"bytes outside the table ×{b['bytes_outside_table'] / a['bytes_outside_table']:.2f}"
                          + (" (goal: 5000-worker time ≤ 5.5× the 1000-worker time)" if big == 5000 else ""))
    if ratios:
        out += ["", "\n".join(ratios)]
    out += ["", f"{os.cpu_count()} CPUs; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after; "
                "each figure one run of the real command line in a fresh process"]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="100,1000,5000", help="worker counts (default 100,1000,5000)")
    parser.add_argument("--no-rsa", action="store_true", help="skip the RSA-2048 floor row")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hardway-bench-") as tmp_name:
        tmp = Path(tmp_name)
        start = start_up()
        rows = []
        for n in (int(w) for w in args.workers.split(",")):
            print(f"  {n} workers ...", file=sys.stderr, flush=True)
            rows.append(size_case(tmp, n))
        rsa = None
        if not args.no_rsa:
            print("  RSA-2048 floor ...", file=sys.stderr, flush=True)
            rsa = rsa_case(tmp)
    load = (load_before, os.getloadavg()[0])
    if args.json:
        print(json.dumps({"rows": rows, "rsa": rsa, "start_up": start, "load": load}, indent=2))
    else:
        print(table(rows, rsa, start, load))


if __name__ == "__main__":
    main()
