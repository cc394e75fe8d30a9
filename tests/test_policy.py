"""The forbidden-import policy: the text shortcut that skips the tree walk never changes the answer."""

from __future__ import annotations

import ast

import pytest

from grader.engine.grading import Grader
from grader.engine.policy import ParsedSource, SourceProblem, could_name_any, find_forbidden_imports, parse_source

BANNED = ["torch", "tensorflow", "jax", "sklearn"]


def parsed(text: str) -> ParsedSource:
    """As the grader parses: the tree only where the text could name a banned package."""
    result = parse_source(text.encode(), "layers.py", BANNED)
    assert not isinstance(result, SourceProblem), result
    return result


def walked(text: str) -> list[str]:
    """What the full walk finds, the shortcut bypassed."""
    return [f.module for f in find_forbidden_imports(ParsedSource(b"", ast.parse(text)), BANNED)]


@pytest.mark.parametrize(
    ("text", "modules"),
    [
        ("import numpy as np\n\ndef f(x):\n    return np.maximum(x, 0)\n", []),
        ("import numpy as np\n# a comment about torch, not an import\n", []),
        ("import torch\n", ["torch"]),
        ("def f():\n    from jax import numpy\n", ["jax"]),
        ("import numpy, \\\n    sklearn.linear_model\n", ["sklearn.linear_model"]),
        ("x = __import__('\\x74orch')\n", ["torch"]),  # the name is hidden in an escape
        ("import importlib\nm = importlib.import_module('tensor' 'flow')\n", ["tensorflow"]),  # concatenated
        ("import \uff54\uff4f\uff52\uff43\uff48\n", ["torch"]),  # fullwidth letters: Python reads "torch"
        ("s = 'caf\u00e9'\nimport jax\n", ["jax"]),
    ],
)
def test_the_shortcut_and_the_walk_agree(text: str, modules: list[str]):
    assert [f.module for f in find_forbidden_imports(parsed(text), BANNED)] == modules
    assert walked(text) == modules


def test_the_walk_is_skipped_only_for_ascii_text_naming_nothing_banned():
    assert not could_name_any("import numpy as np\n", set(BANNED))
    assert could_name_any("import numpy as np  # jax\n", set(BANNED))
    assert could_name_any("x = __import__(name)\n", set(BANNED))
    assert could_name_any("import importlib\nimportlib.import_module(n)\n", set(BANNED))
    assert could_name_any("# caf\u00e9\n", set(BANNED))


def test_a_text_that_names_nothing_banned_is_compiled_without_a_tree():
    clean = parse_source(b"import numpy as np\n", "layers.py", BANNED)
    assert isinstance(clean, ParsedSource) and clean.tree is None and clean.code
    suspect = parse_source(b"import numpy as np  # torch\n", "layers.py", BANNED)
    assert isinstance(suspect, ParsedSource) and suspect.tree is not None


@pytest.mark.parametrize("comment", [b"", b"# torch\n"])
def test_a_syntax_error_is_found_before_the_sandbox_with_or_without_a_tree(grader: Grader, comment: bytes):
    broken = b"import numpy as np\n\ndef relu_forward(x)\n    return x\n" + comment
    assert grader.grade(broken).errors == ["layers.py has a syntax error (line 3): expected ':'"]
    outside = grader.grade(b"import numpy as np\nreturn 1\n" + comment)  # found by the compiler, not the parser
    assert outside.errors == ["layers.py has a syntax error (line 2): 'return' outside function"]


def test_the_compiled_module_ignores_the_graders_own_future_imports():
    """Python compiles an imported file with its own __future__ imports only; so does the grader."""
    import marshal

    result = parse_source(b"def f(x: undefined_name) -> int:\n    return 1\n", "layers.py")
    assert isinstance(result, ParsedSource)
    with pytest.raises(NameError):  # annotations are evaluated at definition, as in `import layers`
        exec(marshal.loads(result.code), {})
