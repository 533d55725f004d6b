"""reference/api.md, made from the docstrings at each site build (tools/api_reference.py): every module
of the packages with its docstring, the public names with their signatures, no generated stub."""

from __future__ import annotations

import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def test_every_documented_module_has_its_section(api) -> None:
    page = api.render()
    names = [name for name, _ in api.modules()]
    assert {"ecd.split", "cloud_server.core", "scheduling.placement", "ecd_cli.main"} <= set(names)
    assert not any(n.startswith("ecd.v1") for n in names)
    for name, path in api.modules():
        if ast.get_docstring(ast.parse(path.read_text())):
            assert f"## `{name}`" in page, name


def test_public_names_carry_their_signature_and_first_paragraph(api) -> None:
    page = api.render()
    section = page.split("## `ecd.split`", 1)[1].split("\n## ", 1)[0]
    assert "* `def decide_split(" in section
    assert "`def _" not in page and "`class _" not in page


def test_members_and_roles(api) -> None:
    tree = ast.parse('def f(a: int, *, b=2) -> str:\n    """One line.\n\n    More."""\nclass C(B):\n'
                     '    """See :func:`~x.y`."""\ndef _hidden(): pass\n')
    assert api._members(tree) == ["* `def f(a: int, *, b=2) -> str` — One line.", "* `class C(B)` — See `x.y`."]
