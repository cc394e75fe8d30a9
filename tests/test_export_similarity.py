"""Similarity: a copy with renamed variables, new comments and new layout is found; independent work is not."""

from __future__ import annotations

import re

from grader.export.similarity import find_similar, normalize, similarity_text
from tests.intake_fixtures import example

CORRECT = example("correct")
STARTER = example("starter")

RENAMES = {"x": "inp", "w": "weights", "b": "bias", "grad_out": "dout", "cache": "saved", "out": "result",
           "grad_x": "dinp", "grad_w": "dweights", "grad_b": "dbias", "shifted": "z", "exp": "e", "probs": "p",
           "N": "batch", "loss": "value"}


def disguised_copy(source: bytes) -> bytes:
    """Rename every variable, add comments, change spacing and blank lines: what a copier does."""
    text = source.decode()
    for old, new in RENAMES.items():
        text = re.sub(rf"(?<![.\w]){re.escape(old)}(?!\w)", new, text)
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("def "):
            lines += ["", "# my own implementation, written from scratch", line]
        else:
            lines.append(line.replace(" = ", "=").replace(", ", ","))
    return ("\n".join(lines) + "\n").encode()


def test_normalization_ignores_names_comments_and_layout() -> None:
    copy = disguised_copy(CORRECT)
    assert copy != CORRECT
    assert [t.text for t in normalize(copy)] == [t.text for t in normalize(CORRECT)]


def test_a_renamed_copy_is_flagged_with_its_shared_regions() -> None:
    report = find_similar({"alice": CORRECT, "bob": disguised_copy(CORRECT)}, starter=STARTER)
    [pair] = report.pairs
    assert {pair.a, pair.b} == {"alice", "bob"}
    assert pair.similarity > 0.95
    assert pair.regions
    alice_lines = CORRECT.decode().splitlines()
    first = pair.regions[0]
    region = first.a_lines if pair.a == "alice" else first.b_lines
    assert 1 <= region[0] <= region[1] <= len(alice_lines)
    covered: set[int] = set()
    for r in pair.regions:
        span = r.a_lines if pair.a == "alice" else r.b_lines
        covered.update(range(span[0], span[1] + 1))
    softmax = next(i for i, line in enumerate(alice_lines, 1) if "def softmax_loss" in line)
    assert softmax + 2 in covered  # the copied softmax body is among the shared regions
    text = similarity_text(report)
    assert "alice" in text and "lines" in text


def test_independent_solutions_are_not_flagged() -> None:
    report = find_similar({"alice": CORRECT, "carol": example("loops_scalar_losses")}, starter=STARTER)
    assert report.pairs == []
    assert report.compared == 2


def test_starter_code_is_excluded() -> None:
    sources = {"s1": STARTER, "s2": STARTER, "alice": CORRECT}
    report = find_similar(sources, starter=STARTER)
    assert report.pairs == []
    assert report.skipped == ["s1", "s2"]
    without = find_similar(sources, starter=None)
    assert any({p.a, p.b} == {"s1", "s2"} for p in without.pairs)


def test_json_report_lists_pairs_and_regions() -> None:
    payload = find_similar({"a": CORRECT, "b": disguised_copy(CORRECT), "c": example("loops_scalar_losses")},
                           starter=STARTER, starter_name="starter.py").as_json()
    assert payload["starter"] == "starter.py"
    assert [(p["a"], p["b"]) for p in payload["pairs"]] == [("a", "b")]
    assert payload["pairs"][0]["regions"][0].keys() == {"a_lines", "b_lines", "tokens"}


def test_a_file_that_stops_decoding_keeps_the_tokens_before_it() -> None:
    """A stray Latin-1 byte at the end of a UTF-8 file: its code still counts (a starter with one
    would otherwise no longer be subtracted from every pair). A coding line naming a codec grading
    refuses (slow to decode) gives no tokens at all."""
    source = example("correct")
    tokens = normalize(source)
    assert normalize(source + b"# caf\xe9\n") == tokens and tokens
    assert normalize(b"# coding: punycode\n" + source) == []
