"""Static checks of a submission's source before anything runs: syntax and forbidden imports.

The trusted process also compiles the source here, and the sandbox runs the compiled module: a run
that compiled it itself would spend about 1.4 ms more, mostly copying the zygote's memory on write.
"""

from __future__ import annotations

import ast
import codecs
import encodings
import io
import marshal
import tokenize
from dataclasses import dataclass


@dataclass
class ForbiddenImport:
    module: str
    line: int

    def describe(self) -> str:
        return f"imports {self.module} (line {self.line}), a library this assignment forbids"


@dataclass
class ParsedSource:
    code: bytes  # the module compiled as `import` would compile it, marshalled for the sandbox
    tree: ast.AST | None = None  # None: not parsed, because the text cannot name a banned package


def could_name_any(text: str, banned: set[str]) -> bool:
    """False only when no import in `text` can name a banned package, judged from the text alone.

    Sound, not exact: an import statement spells its module as identifiers, which Python normalises
    (NFKC), so a pure-ASCII text holds them verbatim; a string passed to `__import__` or
    `import_module` may hide its name in escapes or concatenations, so either word means "maybe".
    """
    if not text.isascii() or "__import__" in text or "import_module" in text:
        return True
    return any(name in text for name in banned)


def find_forbidden_imports(parsed: ParsedSource, forbidden: list[str]) -> list[ForbiddenImport]:
    """Every import of a forbidden package anywhere in the file, even inside a function never called.

    Catches `import x`, `from x import y`, `__import__("x")` and `importlib.import_module("x")`
    with a literal name; a name computed at run time is refused by the sandbox's import blocker.
    A source without a tree is one whose text cannot name a banned package (see `parse_source`).
    """
    banned = set(forbidden)
    found: list[ForbiddenImport] = []
    if parsed.tree is None:
        return found

    def check(name: str | None, node: ast.AST) -> None:
        if name and name.split(".")[0] in banned:
            found.append(ForbiddenImport(name, getattr(node, "lineno", 0)))

    for node in ast.walk(parsed.tree):
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


# Codecs whose decoding time grows with the square of the text (pure Python, rebuilding the string
# at every character): a 1 MB file declaring one held the trusted process for minutes.
SLOW_CODECS = frozenset({"punycode", "idna"})


class UnsupportedEncoding(LookupError):
    """A coding line naming a codec this grader does not decode (slow, or not one of Python's own)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def source_encoding(source: bytes) -> str:
    """The encoding Python reads the source in: UTF-8 unless a BOM or a coding cookie says otherwise.
    UnsupportedEncoding for a codec this grader refuses (slow, or not one of the standard library's);
    SyntaxError or LookupError for a bad cookie."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    name = codecs.lookup(encoding).name
    if name in SLOW_CODECS or encodings.search_function(name) is None:
        raise UnsupportedEncoding(name)
    return encoding


def decode_python_source(source: bytes) -> str:
    """Source bytes as Python itself reads them (as `importlib.util.decode_source` does, with the
    encoding found once), refused before anything is decoded when its codec is (`source_encoding`)."""
    return io.IncrementalNewlineDecoder(None, translate=True).decode(source.decode(source_encoding(source)))


def parse_source(source: bytes, filename: str, forbidden: list[str] | None = None) -> ParsedSource | SourceProblem:
    """The decoded and compiled module, or a one-sentence reason it cannot even be imported.

    With `forbidden`, the syntax tree is built only for a text that could name one of those
    packages: nothing in the tree of any other text could break the policy.
    """
    try:
        text = decode_python_source(source)
    except UnsupportedEncoding as error:
        return SourceProblem(f"{filename} declares the encoding {error.encoding}, which is not accepted: save it as "
                             "UTF-8 and remove the coding line")
    except (UnicodeError, SyntaxError, LookupError):  # UnicodeError: a codec refusing the bytes
        return SourceProblem(f"{filename} is not UTF-8 text (nor in the encoding its coding line declares)")
    if "\x00" in text:
        return SourceProblem(f"{filename} contains NUL bytes; it is not a Python source file")
    try:
        tree = ast.parse(text, filename=filename) if forbidden is None or could_name_any(text, set(forbidden)) else None
        # dont_inherit: only the file's own __future__ imports count, as when Python imports it
        code = compile(text if tree is None else tree, filename, "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f" (line {error.lineno})" if error.lineno else ""
        return SourceProblem(f"{filename} has a syntax error{where}: {error.msg}")
    except (ValueError, RecursionError, MemoryError) as error:
        return SourceProblem(f"{filename} cannot be parsed: {type(error).__name__}")
    return ParsedSource(marshal.dumps(code), tree)
