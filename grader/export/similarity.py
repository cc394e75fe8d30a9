"""Pairs of submissions whose code is suspiciously alike, with the regions they share, for a TA to look at.

The method is winnowing (Schleimer, Wilkerson and Aiken, SIGMOD 2003: the algorithm behind MOSS)
over Python's own tokens, written here rather than taken from copydetect. copydetect (the best kept
library that fits, last released March 2024) fingerprints characters of a Pygments token stream that
renames attributes too (so `np.maximum` and `np.where` look alike), reports each file's copied
slices without saying which slice matches which, reads files from disk, and pulls in Jinja2, tqdm,
Pygments and matplotlib for HTML output we do not use. Python's `tokenize` gives exact tokens with
line numbers, so regions come out as paired line ranges, and sources never leave memory.

Normalization: comments, docstrings, blank lines and layout are dropped; every identifier becomes
`N` except keywords and attribute names after a dot (renaming variables does not hide a copy, but
`np.maximum` and `np.where` still differ); strings become `S` and numbers `0`. Token k-grams that
also occur in the starter code are removed before comparing.
"""

from __future__ import annotations

import hashlib
import io
import keyword
import tokenize
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grader
from grader.engine.policy import source_encoding

K = 12  # tokens per k-gram: about one statement; shorter matches are noise
WINDOW = 6  # winnowing window: any shared run of K + WINDOW - 1 tokens is guaranteed to be seen
DEFAULT_THRESHOLD = 0.6
DEFAULT_MIN_TOKENS = 40  # a pair must share at least this many non-starter tokens to be reported

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING = {getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
            if hasattr(tokenize, name)}  # Python 3.12+ splits f-strings into several tokens


@dataclass(frozen=True)
class Token:
    text: str
    line: int


def normalize(source: bytes) -> list[Token]:
    """The source as normalized tokens; a file that stops tokenizing keeps the tokens before the error."""
    tokens: list[Token] = []
    previous: tokenize.TokenInfo | None = None
    line_start = True
    try:  # a coding line naming a codec grading refuses (slow to decode) is refused here too
        source_encoding(source)
    except (SyntaxError, LookupError):  # UnsupportedEncoding among them
        return tokens
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL):
                line_start = tok.type != tokenize.NL or line_start
                previous = tok
                continue
            if tok.type in _SKIPPED:
                continue
            if tok.type == tokenize.STRING and line_start:
                previous, line_start = tok, False
                continue  # a docstring or a bare string statement: documentation, not code
            line_start = False
            if tok.type == tokenize.NAME:
                after_dot = previous is not None and previous.type == tokenize.OP and previous.string == "."
                text = tok.string if keyword.iskeyword(tok.string) or after_dot else "N"
            elif tok.type == tokenize.NUMBER:
                text = "0"
            elif tok.type == tokenize.STRING or tok.type in _FSTRING:
                text = "S"
                if tokens and tokens[-1].text == "S" and tok.type in _FSTRING:
                    previous = tok
                    continue
            else:
                text = tok.string
            tokens.append(Token(text, tok.start[0]))
            previous = tok
    except (tokenize.TokenError, IndentationError, SyntaxError, UnicodeError, LookupError):
        pass
    return tokens


def _hash(texts: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(texts).encode(), digest_size=8).digest(), "big")


def kgram_hashes(tokens: list[Token], k: int = K) -> list[int]:
    texts = [t.text for t in tokens]
    return [_hash(texts[i:i + k]) for i in range(len(texts) - k + 1)]


def winnow(hashes: list[int], window: int = WINDOW) -> set[int]:
    """The minimum hash of every window of consecutive k-grams (the document's fingerprints)."""
    if len(hashes) <= window:
        return set(hashes)
    return {min(hashes[i:i + window]) for i in range(len(hashes) - window + 1)}


@dataclass
class Document:
    key: str
    tokens: list[Token]
    hashes: list[int]  # every k-gram, by position
    fingerprints: set[int]  # winnowed, starter removed
    own: list[bool]  # whether the k-gram at each position is not starter code
    own_tokens: int  # tokens covered by at least one own k-gram
    where: dict[int, list[int]]  # own k-gram hash -> positions


def fingerprint(key: str, source: bytes, starter: set[int]) -> Document:
    tokens = normalize(source)
    hashes = kgram_hashes(tokens)
    own = [h not in starter for h in hashes]
    fingerprints = winnow(hashes) - starter
    where: dict[int, list[int]] = defaultdict(list)
    for position, h in enumerate(hashes):
        if own[position]:
            where[h].append(position)
    own_tokens = _covered([(i, 1) for i, mine in enumerate(own) if mine])
    return Document(key, tokens, hashes, fingerprints, own, own_tokens, dict(where))


@dataclass
class SharedRegion:
    a_lines: tuple[int, int]
    b_lines: tuple[int, int]
    tokens: int


@dataclass
class SimilarPair:
    a: str
    b: str
    similarity: float  # the larger of the two shares
    a_share: float  # fraction of a's own (non-starter) tokens also found in b
    b_share: float
    shared_tokens: int
    regions: list[SharedRegion] = field(default_factory=list)


@dataclass
class SimilarityReport:
    pairs: list[SimilarPair]
    compared: int
    threshold: float
    starter: str | None = None
    skipped: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "method": f"winnowing over normalized Python tokens (k={K}, window={WINDOW})",
            "threshold": self.threshold,
            "compared": self.compared,
            "starter": self.starter,
            "skipped": self.skipped,
            "pairs": [
                {
                    "a": p.a, "b": p.b, "similarity": round(p.similarity, 3),
                    "a_share": round(p.a_share, 3), "b_share": round(p.b_share, 3),
                    "shared_tokens": p.shared_tokens,
                    "regions": [{"a_lines": list(r.a_lines), "b_lines": list(r.b_lines), "tokens": r.tokens}
                                for r in p.regions],
                }
                for p in self.pairs
            ],
        }


def _matches(a: Document, b: Document) -> list[tuple[int, int, int]]:
    """Shared runs of k-grams as (a start, b start, length), longest first, each k-gram used once per side."""
    where = b.where
    runs: dict[int, list[int]] = {}  # diagonal -> [a start, length]
    found = []
    for i, h in enumerate(a.hashes):
        if not a.own[i]:
            continue
        for j in where.get(h, ()):
            run = runs.get(j - i)
            if run is not None and run[0] + run[1] == i:
                run[1] += 1
            else:
                if run is not None:
                    found.append((run[0], run[0] + j - i, run[1]))
                runs[j - i] = [i, 1]
    found += [(start, start + d, length) for d, (start, length) in runs.items()]
    found.sort(key=lambda m: -m[2])
    used_a = bytearray(len(a.hashes))
    used_b = bytearray(len(b.hashes))
    tiles = []
    for i, j, length in found:
        if any(used_a[i:i + length]) or any(used_b[j:j + length]):
            continue
        used_a[i:i + length] = b"\x01" * length
        used_b[j:j + length] = b"\x01" * length
        tiles.append((i, j, length))
    return sorted(tiles)


def _covered(runs: list[tuple[int, int]]) -> int:
    """Tokens covered by k-gram runs given as (start, length)."""
    total = 0
    reached = -1  # the last token counted so far
    for start, length in sorted(runs):
        end = start + length + K - 2
        if end > reached:
            total += end - max(start, reached + 1) + 1
            reached = end
    return total


def _regions(a: Document, b: Document, tiles: list[tuple[int, int, int]]) -> list[SharedRegion]:
    """Tiles that continue each other on both sides (a starter line in between) shown as one region."""
    merged: list[list[int]] = []  # [a start, a end token, b start, b end token]
    for i, j, length in tiles:
        a_end, b_end = i + length + K - 2, j + length + K - 2
        last = merged[-1] if merged else None
        if last is not None and i <= last[1] + K and last[2] <= j <= last[3] + K:
            last[1], last[3] = max(last[1], a_end), max(last[3], b_end)
        else:
            merged.append([i, a_end, j, b_end])
    return [
        SharedRegion(a_lines=(a.tokens[a0].line, a.tokens[a1].line), b_lines=(b.tokens[b0].line, b.tokens[b1].line),
                     tokens=a1 - a0 + 1)
        for a0, a1, b0, b1 in merged
    ]


def compare(a: Document, b: Document) -> SimilarPair:
    tiles = _matches(a, b)
    shared_a = _covered([(i, length) for i, _, length in tiles])
    shared_b = _covered([(j, length) for _, j, length in tiles])
    a_share = shared_a / a.own_tokens if a.own_tokens else 0.0
    b_share = shared_b / b.own_tokens if b.own_tokens else 0.0
    return SimilarPair(a.key, b.key, max(a_share, b_share), a_share, b_share, min(shared_a, shared_b),
                       _regions(a, b, tiles))


def find_similar(
    sources: Mapping[str, bytes],
    *,
    starter: bytes | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    starter_name: str | None = None,
) -> SimilarityReport:
    """Every pair sharing at least `threshold` of one side's own code and `min_tokens` tokens, most alike first."""
    starter_hashes = set(kgram_hashes(normalize(starter))) if starter else set()
    documents = []
    skipped = []
    for key, source in sources.items():
        document = fingerprint(key, source, starter_hashes)
        if document.fingerprints:
            documents.append(document)
        else:
            skipped.append(key)
    # Only pairs whose winnowed fingerprints overlap enough get the exact (slower) comparison: a token
    # share counts the whole k-gram of every match, so it runs about four times the fingerprint share.
    index: dict[int, list[int]] = defaultdict(list)
    for n, document in enumerate(documents):
        for h in document.fingerprints:
            index[h].append(n)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for holders in index.values():
        for x, first in enumerate(holders):
            for second in holders[x + 1:]:
                shared[(first, second)] += 1
    pairs = []
    for (x, y), count in shared.items():
        a, b = documents[x], documents[y]
        estimate = max(count / len(a.fingerprints), count / len(b.fingerprints))
        if estimate < threshold / 4:
            continue
        pair = compare(a, b)
        if pair.similarity >= threshold and pair.shared_tokens >= min_tokens:
            pairs.append(pair)
    pairs.sort(key=lambda p: (-p.similarity, p.a, p.b))
    return SimilarityReport(pairs, compared=len(documents), threshold=threshold, starter=starter_name,
                            skipped=sorted(skipped))


def similarity_text(report: SimilarityReport) -> str:
    lines = [f"compared {report.compared} submissions"
             + (f" (starter code from {report.starter} excluded)" if report.starter else "")
             + f"; {len(report.pairs)} pair(s) at or above {report.threshold:.0%}"]
    if report.skipped:
        lines.append(f"no code of their own to compare: {', '.join(report.skipped)}")
    for pair in report.pairs:
        lines.append("")
        lines.append(f"{pair.a}  <->  {pair.b}: {pair.similarity:.0%} alike "
                     f"({pair.a_share:.0%} of {pair.a}, {pair.b_share:.0%} of {pair.b}, {pair.shared_tokens} tokens)")
        for region in pair.regions:
            lines.append(f"    {pair.a} lines {region.a_lines[0]}-{region.a_lines[1]}  ~  "
                         f"{pair.b} lines {region.b_lines[0]}-{region.b_lines[1]}  ({region.tokens} tokens)")
    return "\n".join(lines)


def default_starter() -> Path | None:
    """submissions/examples/starter.py, from the working folder or beside the grader's own checkout."""
    for root in (Path.cwd(), Path(grader.__file__).resolve().parent.parent):
        candidate = root / "submissions" / "examples" / "starter.py"
        if candidate.is_file():
            return candidate
    return None
