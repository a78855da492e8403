import re
import tomllib

import yaml
from conftest import REPO


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_pins() -> dict[str, str]:
    """Every requirement of pyproject.toml (runtime and extras), by name: the ranges."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [
        *project["dependencies"],
        *(s for extra in project["optional-dependencies"].values() for s in extra),
    ]
    return {
        _requirement_name(spec): spec.replace(" ", "") for spec in specs if not spec.startswith("brainssl[")
    }


def _constraints() -> dict[str, str]:
    """constraints.txt: the exact versions tested together, by name."""
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {
        _requirement_name(line): line.strip().split("==")[1]
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def _allows(spec: str, version: str) -> bool:
    from packaging.requirements import Requirement

    return Requirement(spec).specifier.contains(version, prereleases=True)


def test_env_pins_agree_with_pyproject_and_constraints():
    # a job's env pins what constraints.txt pins (or keeps pyproject's range), inside pyproject's range
    pins, tested = _pyproject_pins(), _constraints()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} >= {"preprocess", "train", "evaluate", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert "python=3.11" in spec["dependencies"], env.name
        for requirement in pip:
            if requirement.startswith("-"):
                continue  # a pip option (--extra-index-url ...), not a requirement
            name = _requirement_name(requirement)
            assert name in pins, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert _allows(requirement, tested[name]), (
                f"{env.name}: {requirement} excludes tested {tested[name]}"
            )
            assert _allows(pins[name], tested[name]), f"pyproject {pins[name]} excludes tested {tested[name]}"


def test_every_rule_names_an_existing_conda_env_and_a_log():
    for rules in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = rules.read_text()
        blocks = re.split(r"^rule ", text, flags=re.M)[1:]
        for block in blocks:
            name = block.split(":", 1)[0]
            if "input:" in block and "output:" not in block:
                continue  # a target rule: it runs nothing
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            assert env, f"rule {name} in {rules.name} names no conda env"
            assert (rules.parent / env.group(1)).resolve().is_file(), f"rule {name}: {env.group(1)} missing"
            assert "log:" in block, f"rule {name} has no log"


def test_constraints_pin_torch_first_and_every_pyproject_requirement_within_its_range():
    constraints = _constraints()
    assert constraints["torch"] == "2.13.0"
    for name, spec in _pyproject_pins().items():
        assert name in constraints, f"{name} ({spec}) has no tested version in constraints.txt"
        assert _allows(spec, constraints[name]), f"pyproject {spec} excludes tested {constraints[name]}"
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index("install --disable-pip-version-check -q torch==2.13.0") < makefile.index(
        "-c constraints.txt"
    )
