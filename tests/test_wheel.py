"""The wheel: build it, install it into a fresh venv, and run the installed `hardway` from an empty
folder, far from the checkout. The catalog, the templates and the examples must travel inside it
(hardway/_data/...), and the installed command must find them there."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

DATA_DIRS = ("pki", "units", "examples")


def run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONDONTWRITEBYTECODE="1", COLUMNS="200", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheel(repo_root, tmp_path_factory, prerequisite) -> Path:
    if importlib.util.find_spec("build") is None:
        prerequisite("the `build` package", "pip install build")
    out = tmp_path_factory.mktemp("dist")
    # build copies the source into an isolated environment with hatchling from the package index
    result = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(repo_root)], cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(out.glob("hardway-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory, prerequisite) -> Path:
    root = tmp_path_factory.mktemp("venv")
    # --system-site-packages: the dependencies (pydantic, cryptography, ...) come from this machine
    made = run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], cwd=root)
    if made.returncode != 0:
        prerequisite(f"python -m venv ({made.stderr.strip()[-200:]})", "apt-get install python3-venv")
    python = root / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=root)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return root


def test_wheel_holds_the_package_and_the_examples(wheel, repo_root):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hardway/__init__.py" in names and "hardway/cli.py" in names and "hardway/spec.py" in names
    for example in ("kthw", "ha", "large"):
        assert f"hardway/_data/examples/{example}.yaml" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hardway = hardway.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_holds_every_data_file(wheel, repo_root):
    """pki/ and units/ at the top of the checkout ship as hardway/_data/pki and hardway/_data/units,
    every file of them, byte for byte."""
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    for data in DATA_DIRS:
        files = [p for p in (repo_root / data).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, f"{data}/ in the checkout is empty: the wheel would ship no {data} data"
        shipped = [n for n in names if n.startswith(f"hardway/_data/{data}/")]
        assert shipped, f"the wheel has no hardway/_data/{data}/"
        for f in files:
            name = f"hardway/_data/{data}/{f.relative_to(repo_root / data).as_posix()}"
            assert name in names, f"{name} missing from the wheel"
            assert archive.read(name) == f.read_bytes(), name
    # the JSON Schema of cluster.yaml, for editors (`hardway schema` prints the same)
    schema = repo_root / "hardway" / "cluster.schema.json"
    assert archive.read("hardway/cluster.schema.json") == schema.read_bytes()


def test_installed_hardway_comes_from_the_venv(venv, tmp_path):
    python = venv / "bin" / "python"
    result = run([str(python), "-c", "import hardway, hardway.resources as r; print(hardway.__file__); "
                                     "print(r.data_dir('examples'))"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, examples = (Path(line) for line in result.stdout.splitlines())
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    assert module.is_relative_to(site), f"hardway imported from {module}, not the venv's {site}"
    assert examples == module.parent / "_data" / "examples"


def test_installed_command_works_in_an_empty_folder(venv, repo_root, tmp_path):
    hardway = venv / "bin" / "hardway"
    assert hardway.is_file()

    listed = run([str(hardway), "--list"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for task in ("init", "validate", "plan", "pki", "kubeconfigs", "units", "bundle", "check", "renew", "clean"):
        assert f"  {task} " in listed.stdout

    validated = run([str(hardway), "validate"], cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "built-in example" in validated.stderr
    assert "hardway/_data/examples/kthw.yaml" in validated.stderr  # found inside the installed package
    assert yaml.safe_load((repo_root / "examples" / "kthw.yaml").read_text())["name"] in validated.stdout
    assert list(tmp_path.iterdir()) == []

    initialised = run([str(hardway), "init", "--example", "large"], cwd=tmp_path)
    assert initialised.returncode == 0, initialised.stderr
    assert (tmp_path / "cluster.yaml").read_bytes() == (repo_root / "examples" / "large.yaml").read_bytes()
    again = run([str(hardway), "validate"], cwd=tmp_path)
    assert again.returncode == 0 and "hardway-large" in again.stdout and "built-in" not in again.stderr
