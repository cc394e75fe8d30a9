"""Static checks of a submission's source before anything runs: syntax and forbidden imports."""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass


@dataclass
class ForbiddenImport:
    module: str
    line: int

    def describe(self) -> str:
        return f"imports {self.module} (line {self.line}), a library this assignment forbids"


def find_forbidden_imports(tree: ast.AST, forbidden: list[str]) -> list[ForbiddenImport]:
    """Every import of a forbidden package anywhere in the file, even inside a function never called.

    Catches `import x`, `from x import y`, `__import__("x")` and `importlib.import_module("x")`
    with a literal name; a name computed at run time is refused by the sandbox's import blocker.
    """
    banned = set(forbidden)
    found: list[ForbiddenImport] = []

    def check(name: str | None, node: ast.AST) -> None:
        if name and name.split(".")[0] in banned:
            found.append(ForbiddenImport(name, getattr(node, "lineno", 0)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            check(node.module, node)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if called in ("__import__", "import_module") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    check(first.value, node)
    return found


@dataclass
class SourceProblem:
    message: str


def decode_python_source(source: bytes) -> str:
    """Source bytes as Python itself reads them: UTF-8 unless a BOM or a coding cookie says otherwise."""
    return importlib.util.decode_source(source)


def parse_source(source: bytes, filename: str) -> ast.AST | SourceProblem:
    """The parsed module, or a one-sentence reason it cannot even be imported."""
    try:
        text = decode_python_source(source)
    except (UnicodeDecodeError, SyntaxError, LookupError):
        return SourceProblem(f"{filename} is not UTF-8 text (nor in the encoding its coding line declares)")
    if "\x00" in text:
        return SourceProblem(f"{filename} contains NUL bytes; it is not a Python source file")
    try:
        return ast.parse(text, filename=filename)
    except SyntaxError as error:
        where = f" (line {error.lineno})" if error.lineno else ""
        return SourceProblem(f"{filename} has a syntax error{where}: {error.msg}")
    except (ValueError, RecursionError, MemoryError) as error:
        return SourceProblem(f"{filename} cannot be parsed: {type(error).__name__}")
