import re
import tomllib

import yaml
from conftest import REPO


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_requirement_name(spec): spec.replace(" ", "") for spec in project["dependencies"]}


def test_env_pins_agree_with_pyproject():
    pins = _pyproject_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} >= {"preprocess", "train", "evaluate", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert "python=3.11" in spec["dependencies"], env.name
        for requirement in pip:
            name = _requirement_name(requirement)
            assert name in pins, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert requirement.replace(" ", "") == pins[name], (
                f"{env.name}: {requirement} != pyproject {pins[name]}"
            )


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


def test_constraints_pin_torch_first_and_match_pyproject():
    constraints = {
        _requirement_name(line): line.strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert constraints["torch"] == "torch==2.13.0"
    for name, spec in _pyproject_pins().items():
        if "==" in spec:
            assert constraints[name].split("==")[1] == spec.split("==")[1], name
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index("install --disable-pip-version-check -q torch==2.13.0") < makefile.index(
        "-c constraints.txt"
    )
