"""Large clusters: bundling 1000 workers keeps memory flat (peak RSS about the same as for 100
workers: plans and archives are streamed one node at a time), every one of the 1005 bundles passes
`check` (least privilege by content on every worker), and a terminal shows a progress bar."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardway import spec
from hardway.bundle import check_bundles
from hardway.pki import load_materials

from helpers import REPO  # noqa: E402
sys.path.insert(0, str(REPO / "benchmarks"))
from make_large import large_spec  # noqa: E402

# Runs `hardway` in this interpreter and reports its own peak RSS (KiB) on stderr's last line.
_MEASURED = """
import resource, sys
from hardway.cli import program
try:
    program.run(["hardway"] + sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
print("maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""
# Flat: 10x the workers may cost this much more peak memory, not 10x.
FLAT_KIB = 25 * 1024


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")


def measured(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, int, float]:
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-c", _MEASURED, *args], cwd=cwd, env=env(), capture_output=True,
                       text=True, timeout=1200)
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    return r, int(r.stderr.strip().splitlines()[-1].split()[1]), elapsed


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """examples/large.yaml bundled (after its PKI run), with the bundling run's peak RSS."""
    d = tmp_path_factory.mktemp("large")
    spec_file = REPO / "examples" / "large.yaml"
    measured("pki", "--spec", str(spec_file), "--out", "out", cwd=d)
    r, rss, seconds = measured("bundle", "--spec", str(spec_file), "--out", "out", cwd=d)
    print(f"\nbundle large: {seconds:.1f}s, peak RSS {rss / 1024:.0f} MiB")
    return spec.load(spec_file), d / "out", rss, r


@pytest.mark.slow
def test_large_bundles_with_flat_memory(large, tmp_path):
    cluster, out, rss_1000, r = large
    assert len(cluster.workers) == 1000
    assert "bundles: 1005 created" in r.stdout
    assert len(list((out / "bundles").glob("*.tar.gz"))) == 1005
    small = tmp_path / "cluster.yaml"
    small.write_text(large_spec(100))
    measured("pki", "--spec", str(small), "--out", "out", cwd=tmp_path)
    _, rss_100, _ = measured("bundle", "--spec", str(small), "--out", "out", cwd=tmp_path)
    print(f"peak RSS: 100 workers {rss_100 / 1024:.0f} MiB, 1000 workers {rss_1000 / 1024:.0f} MiB")
    assert rss_1000 - rss_100 < FLAT_KIB, f"peak RSS grew from {rss_100} KiB to {rss_1000} KiB"


@pytest.mark.slow
def test_every_large_bundle_passes_check(large):
    """Least privilege, checksums, manifests and references over all 1005 archives on disk."""
    cluster, out, _, _ = large
    report = check_bundles(cluster, out, load_materials(cluster, out / "pki"))
    assert len(report.rows) == 1005
    assert report.ok, report.all_problems()[:10]


def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal, `bundle` draws a progress bar on stderr (and nothing of it off a terminal)."""
    (tmp_path / "cluster.yaml").write_text((REPO / "examples" / "ha.yaml").read_text())
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "hardway.cli", "bundle"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=slave, env=dict(env(), TERM="xterm"))
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    stdout = p.communicate(timeout=120)[0]
    os.close(master)
    assert p.returncode == 0
    assert b"writing bundles" in seen
    assert b"writing bundles" not in stdout
    r = subprocess.run([sys.executable, "-m", "hardway.cli", "bundle", "--out", "again"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "writing bundles" not in r.stderr
