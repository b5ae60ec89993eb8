"""pyproject.toml and environment.yml pin the same packages, and the running environment matches them."""
import re
import sys
import tomllib
from importlib import metadata

import yaml

from conftest import REPO

MUST_PIN = ("torch", "torchvision")  # unpinned, these download gigabytes


def normalise(name):
    """PEP 503 normalised package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(requirements, where):
    """{name: version} from 'name==version' strings; AssertionError naming any requirement not pinned exactly."""
    pins = {}
    for req in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;,]+)\s*", req)
        assert match, f"{where}: {req!r} is not pinned exactly as name==version"
        pins[normalise(match[1])] = match[2]
    return pins


def pyproject_pins():
    """Pinned dependencies of pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return parse_pins(project["dependencies"], "pyproject.toml")


def environment_yml():
    """(python spec, pip pins) from environment.yml; the project itself ('-e .') is skipped."""
    deps = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return python, parse_pins([p for p in pip if not p.startswith("-e")], "environment.yml")


def test_pyproject_and_environment_yml_agree():
    """Both files list the same packages at the same versions."""
    project, (_, conda) = pyproject_pins(), environment_yml()
    mismatches = [f"{name}: pyproject.toml {project.get(name, 'missing')} vs environment.yml "
                  f"{conda.get(name, 'missing')}" for name in sorted(project.keys() | conda.keys())
                  if project.get(name) != conda.get(name)]
    assert not mismatches, "pyproject.toml and environment.yml disagree:\n" + "\n".join(mismatches)


def test_python_version_agrees():
    """environment.yml and pyproject.toml both ask for Python 3.11, the version running the tests."""
    python, _ = environment_yml()
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.replace(" ", "") in ("python=3.11", "python==3.11"), f"environment.yml has {python!r}"
    assert "3.11" in requires, f"pyproject.toml requires-python is {requires!r}"
    assert sys.version_info[:2] == (3, 11), f"tests run on Python {sys.version.split()[0]}, expected 3.11"


def test_heavy_packages_are_pinned():
    """torch and torchvision are pinned (an unpinned torch pulls gigabytes)."""
    pins = pyproject_pins()
    missing = [name for name in MUST_PIN if name not in pins]
    assert not missing, f"pin {missing} exactly in pyproject.toml"


def test_installed_versions_match_pins():
    """The environment running the tests has exactly the pinned versions (re-run `make test` to reinstall)."""
    wrong = []
    for name, version in pyproject_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != version:
            wrong.append(f"{name}: installed {installed}, pinned {version}")
    assert not wrong, "environment out of date (delete .venv or touch pyproject.toml, then `make test`):\n" + \
        "\n".join(wrong)
