"""Size limits the house style sets (issue 14): they fail the change that crosses them."""

from conftest import REPO

MAX_SOURCE_LINES = 500
MAX_COMMON_SMK_LINES = 200


def _lines(path):
    return len(path.read_text().splitlines())


def test_no_package_module_is_over_500_lines():
    long = {
        str(p.relative_to(REPO)): _lines(p)
        for p in (REPO / "src").rglob("*.py")
        if _lines(p) > MAX_SOURCE_LINES
    }
    assert not long, f"split these by role (at most {MAX_SOURCE_LINES} lines each): {long}"


def test_common_smk_holds_only_validation_constraints_and_generic_functions():
    assert _lines(REPO / "workflow/rules/common.smk") <= MAX_COMMON_SMK_LINES
