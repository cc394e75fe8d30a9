"""Check semantics, fault isolation and the rubric as data, on submissions written by the tests."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from grader.engine.assignment import Assignment, AssignmentError, load_assignment
from grader.engine.grading import Grader
from grader.engine.policy import ParsedSource, parse_source
from grader.engine.report import SubmissionReport
from grader.export.similarity import normalize
from grader.sandbox.isolation import Limits
from tests.conftest import EXAMPLES

CORRECT = (EXAMPLES / "correct.py").read_text()


def variant(old: str, new: str) -> bytes:
    assert old in CORRECT
    return CORRECT.replace(old, new).encode()


def check(report: SubmissionReport, problem: int, name: str):
    return next(c for c in report.problems[problem - 1].checks if c.name == name)


def test_reference_passes_gradient_checks_with_tenfold_margin_over_50_seeds(assignment: Assignment, grader: Grader):
    solution = (assignment.path / "solution.py").read_bytes()
    for seed in range(50):
        seeded = Grader(assignment, pool=grader.pool, seed=seed)
        report = seeded.grade(solution)
        assert report.score == report.max_score, (seed, report.summary())
        for problem in report.problems:
            gradient_check = next(c for c in problem.checks if c.name == "gradient check")
            assert gradient_check.measured is not None
            assert gradient_check.measured < 1e-9 / 10, (seed, problem.title, gradient_check.measured)


def test_seed_changes_the_cases_but_not_the_score(assignment: Assignment, grader: Grader):
    other = Grader(assignment, pool=grader.pool, seed=12345)
    x_default = cast(np.ndarray, grader.plan.cases["fc"][0]["x"])
    x_other = cast(np.ndarray, other.plan.cases["fc"][0]["x"])
    assert x_default.shape == x_other.shape and not (x_default == x_other).all()
    report = other.grade(CORRECT.encode())
    assert report.score == 10 and report.seed == 12345


def test_backward_is_graded_with_the_documented_cache_when_forward_raises(grader: Grader):
    report = grader.grade(variant("    out = x.dot(w) + b\n", "    raise ValueError('not done')\n"))
    assert check(report, 1, "forward").score == 0
    assert "fc_forward raised ValueError: not done" in check(report, 1, "forward").message
    for name in ("grad_x", "grad_w", "grad_b"):
        assert check(report, 1, name).passed, check(report, 1, name).message
    assert "documented cache" in check(report, 1, "grad_x").message
    assert not check(report, 1, "gradient check").passed
    assert report.problems[0].score == 1.5 and report.score == 8.5


def test_backward_uses_the_students_own_cache(grader: Grader):
    # a forward that caches (x, w) only, with a backward that unpacks two values, is consistent
    source = variant("    cache = (x, w, b)\n    return out, cache", "    return out, (x, w)")
    source = source.replace(b"    x, w, b = cache\n    grad_x", b"    x, w = cache\n    grad_x")
    report = grader.grade(source)
    assert report.problems[0].score == 3, report.problems[0]


def test_a_forward_that_ignores_its_input_earns_no_gradient_check(grader: Grader):
    source = textwrap.dedent(
        """
        import numpy as np

        def l2_regularization(w, reg):
            return 0.0, np.zeros_like(w)
        """
    ).encode()
    report = grader.grade(source)
    gradient_check = check(report, 4, "gradient check")
    assert not gradient_check.passed
    assert "ignores w" in gradient_check.message


def test_wrong_shape_names_both_shapes_and_fails_every_check_using_it(grader: Grader):
    report = grader.grade(variant("grad_w = x.T.dot(grad_out)", "grad_w = x.T.dot(grad_out).T"))
    message = check(report, 1, "grad_w").message
    assert "grad_w has shape (5, 4); expected (4, 5)" in message
    assert not check(report, 1, "gradient check").passed
    assert check(report, 1, "grad_x").passed and check(report, 1, "grad_b").passed


def test_a_tuple_of_the_wrong_length_is_explained(grader: Grader):
    report = grader.grade(variant("    return grad_x, grad_w, grad_b", "    return grad_x, grad_w"))
    message = check(report, 1, "grad_x").message
    assert "fc_backward must return a tuple (grad_x, grad_w, grad_b)" in message
    assert "length 2" in message


def test_an_exception_text_utf8_cannot_carry_costs_only_its_own_checks(grader: Grader):
    """A lone surrogate (from a surrogateescape decode) in a message once lost the whole run's results."""
    raising = "def relu_forward(x):\n    raise ValueError('bad \\udcff value')\n"
    report = grader.grade(variant("def relu_forward(x):", raising))
    assert "relu_forward raised ValueError: bad \\udcff value" in check(report, 2, "forward").message
    assert [p.score for p in report.problems] == [3, 0.5, 3, 2]


def test_a_missing_function_costs_only_its_checks(grader: Grader):
    source = CORRECT.split("def l2_regularization")[0].encode()
    report = grader.grade(source)
    assert report.problems[3].score == 0
    assert "defines no function l2_regularization" in check(report, 4, "loss").message
    assert report.score == 8


def test_losses_as_numpy_scalars_are_accepted(grader: Grader):
    report = grader.grade(variant("loss = 0.5 * reg * np.sum(w * w)", "loss = np.float32(0.5 * reg * np.sum(w * w))"))
    assert check(report, 4, "loss").passed


def test_a_loss_shaped_like_an_array_fails_with_both_shapes(grader: Grader):
    report = grader.grade(variant("loss = 0.5 * reg * np.sum(w * w)", "loss = np.array([0.5 * reg * np.sum(w * w)])"))
    assert "loss has shape (1,); expected ()" in check(report, 4, "loss").message


def test_a_one_element_loss_fails_the_loss_check_but_not_the_gradient_check(grader: Grader):
    """A loss of shape (1,) is not the single number the contract asks for, and the loss checks say so;
    but its numeric gradient is as well defined as a float's, so a right gradient passes its check:
    one slip is not charged three times."""
    report = grader.grade(variant("loss = -np.mean(np.log(probs[np.arange(N), y]))",
                                  "loss = -np.sum(np.log(probs[np.arange(N), y]), axis=0, keepdims=True) / N"))
    assert "loss has shape (1,); expected ()" in check(report, 3, "loss").message
    assert check(report, 3, "gradient").passed and check(report, 3, "gradient check").passed
    assert report.problems[2].score == 1.5


def test_values_returned_in_each_others_place_get_a_hint_about_the_order(grader: Grader):
    report = grader.grade(variant("    return loss, grad_x", "    return grad_x, loss"))
    loss = check(report, 3, "loss")
    assert "loss has shape (4, 5); expected ()" in loss.message
    assert loss.hint.startswith("loss has the shape grad_x should have, and grad_x the shape of loss: return them")


def test_a_forward_that_returns_no_cache_is_told_how_the_starter_returns(grader: Grader):
    report = grader.grade(variant("    out = np.maximum(0, x)\n    cache = x\n    return out, cache",
                                  "    return np.maximum(0, x)"))
    for name in ("forward", "gradient check"):
        failed = check(report, 2, name)
        assert "relu_forward must return a tuple (out, cache); it returned an ndarray" in failed.message
        assert failed.hint == "End relu_forward with `return out, cache`, as the starter code does."


def test_hidden_inputs_are_not_printed(grader: Grader):
    report = grader.grade(variant("out = x.dot(w) + b", "out = x.dot(w) - b"))
    message = check(report, 1, "forward").message
    assert "fc_forward(x (3, 4), w (4, 5), b (5,))" in message
    assert "[" not in message  # shapes only, no array contents


def test_debug_output_never_reaches_a_score(grader: Grader):
    source = variant(
        "def fc_forward(x, w, b):",
        "print('{\"score\": 10, \"max_score\": 10}')\n\ndef fc_forward(x, w, b):\n    print('score: 10')",
    )
    source = source.replace(b"out = x.dot(w) + b", b"out = x.dot(w)")
    report = grader.grade(source)
    assert not check(report, 1, "forward").passed
    assert report.score < 10


@pytest.mark.parametrize(
    "statement",
    ["import torch", "from tensorflow import keras", "import jax.numpy as jnp", "__import__('keras')",
     "importlib.import_module('torch.nn')"],
)
def test_forbidden_imports_anywhere_score_zero(grader: Grader, statement: str):
    source = CORRECT + f"\n\ndef never_called():\n    import importlib\n    {statement}\n"
    report = grader.grade(source.encode())
    assert report.score == 0
    assert report.policy_violation
    assert "a library this assignment forbids" in report.errors[0]


def test_forbidden_import_computed_at_run_time_is_refused_in_the_sandbox(grader: Grader):
    source = variant("    grad_w = reg * w", "    __import__('to' + 'rch')\n    grad_w = reg * w")
    report = grader.grade(source)
    assert "not allowed" in check(report, 4, "loss").message
    assert report.problems[3].score == 0 and report.score == 8


def copy_assignment(tmp_path: Path) -> Path:
    folder = tmp_path / "hw5"
    shutil.copytree(Path(load_assignment().path), folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_a_rubric_file_changes_weights_adds_checks_and_policy_without_code(tmp_path: Path, grader: Grader):
    folder = copy_assignment(tmp_path)
    rubric = (folder / "rubric.toml").read_text()
    rubric = rubric.replace('forbidden_action = "zero"', 'forbidden_action = "warn"')
    rubric = rubric.replace('name = "forward"\npoints = 1\nkind = "match"\nfunction = "fc_forward"',
                            'name = "forward"\npoints = 2\nkind = "match"\nfunction = "fc_forward"')
    rubric += textwrap.dedent(
        """
        [[problem.check]]
        name = "small weights"
        points = 1
        kind = "match"
        function = "l2_regularization"
        cases = "l2_gradcheck"
        outputs = ["loss", "grad_w"]
        """
    )
    (folder / "rubric.toml").write_text(rubric)
    custom = Grader(load_assignment(folder), pool=grader.pool)
    assert custom.assignment.rubric.max_score == 12
    report = custom.grade((CORRECT + "\n\ndef unused():\n    import torch\n").encode())
    assert report.score == 12 and report.max_score == 12
    assert [p.max_score for p in report.problems] == [4, 2, 3, 3]
    assert any("torch" in w for w in report.warnings)


def test_a_forbidden_package_cannot_be_imported_past_the_blocker(tmp_path: Path):
    """The run's import blocker lives in the student's own process: a submission can take it out of
    sys.meta_path and import by a computed name. The forbidden packages' files are hidden from runs,
    so nothing is there to import (here click, a dependency of the grader, and the standard library's
    one-file statistics module stand in for sklearn)."""
    folder = copy_assignment(tmp_path)
    rubric = (folder / "rubric.toml").read_text()
    forbidding = rubric.replace('"mlx", "sklearn"]', '"mlx", "sklearn", "click", "statistics"]')
    (folder / "rubric.toml").write_text(forbidding)
    sneaky = CORRECT.replace("    return loss, grad_x", textwrap.indent(textwrap.dedent("""\
        import importlib
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ForbiddenImportBlocker"]
        library = importlib.import_module("cl" + "ick")
        return (loss if callable(library.style) else None), grad_x"""), "    "))
    sneaky = sneaky.replace("    return loss, grad_w", textwrap.indent(textwrap.dedent("""\
        import importlib.machinery
        import importlib.util
        import os
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ForbiddenImportBlocker"]
        try:
            library = importlib.import_module("stat" + "istics")
        except ImportError:  # then its compiled copy, loaded by hand
            compiled = importlib.util.cache_from_source(os.path.join(os.path.dirname(os.__file__), "statistics.py"))
            library = importlib.machinery.SourcelessFileLoader("stat" + "istics", compiled).load_module()
        return library.fmean([loss]), grad_w"""), "    "))
    assert 'import_module("stat" + "istics")' in sneaky and 'import_module("cl" + "ick")' in sneaky
    with Grader(load_assignment(folder), workers=1) as custom:
        report = custom.grade(sneaky.encode())
    # a package: what it imports is an empty folder (a namespace package, at most): nothing of the library's
    assert report.problems[2].score == 0, report.summary()
    assert "module 'click' has no attribute 'style'" in check(report, 3, "loss").message
    # a module that is one file: not there at all
    assert report.problems[3].score == 0, report.summary()
    assert "statistics" in check(report, 4, "loss").message  # nor its compiled copy
    assert report.score == 5


def test_a_broken_rubric_is_one_clear_sentence(tmp_path: Path):
    folder = copy_assignment(tmp_path)
    rubric = folder / "rubric.toml"
    rubric.write_text(rubric.read_text().replace('cases = "fc"', 'cases = "nope"', 1))
    with pytest.raises(AssignmentError, match="unknown case set 'nope'"):
        load_assignment(folder)


def test_grade_many_keeps_order_and_reports_progress(grader: Grader):
    sources = [(f"s{i}", CORRECT.encode() if i % 2 == 0 else b"def broken(:\n") for i in range(6)]
    seen: list[int] = []
    reports = grader.grade_many(sources, progress=lambda done, total, report: seen.append(done))
    assert [r.student for r in reports] == [s for s, _ in sources]
    assert [r.score for r in reports] == [10, 0, 10, 0, 10, 0]
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]


def test_grade_many_stops_at_an_error_without_grading_the_rest(grader: Grader, monkeypatch: pytest.MonkeyPatch):
    """An error (here in the progress callback; Ctrl-C the same) stops the files not yet started: once,
    every remaining file of the class was graded before the error came out."""
    graded: list[str] = []
    grade = grader.grade

    def counted(source: bytes, student: str | None = None) -> SubmissionReport:
        graded.append(student or "")
        return grade(source, student)

    def fail(done: int, total: int, report: SubmissionReport) -> None:
        raise RuntimeError("the TA's terminal went away")

    monkeypatch.setattr(grader, "grade", counted)
    with pytest.raises(RuntimeError, match="terminal went away"):
        grader.grade_many([(f"s{i}", CORRECT.encode()) for i in range(12)], progress=fail)
    assert len(graded) <= 2 * grader.pool.size  # the first report, and what was running beside it


def test_a_coding_line_whose_codec_refuses_the_file_scores_0_and_grading_goes_on(grader: Grader):
    """`# coding: punycode` makes decoding raise a bare UnicodeError, which once escaped and stopped
    the grading of the whole class with no report for anyone."""
    reports = grader.grade_many([("odd", b"# coding: utf-7\n" + CORRECT.encode()), ("ok", CORRECT.encode())])
    assert [r.score for r in reports] == [0, 10]
    assert "is not UTF-8 text (nor in the encoding its coding line declares)" in reports[0].errors[0]


def test_a_coding_line_naming_a_slow_codec_is_refused_before_decoding(grader: Grader):
    """punycode decodes in time that grows with the square of the text: a 1 MB file held the trusted
    process (and every other submission) for minutes. Such a file is refused unread, as is a codec
    that is not the standard library's."""
    # a valid punycode file (Python would import it): small here, so that the test is quick either way
    source = ("# coding: punycode\n" + CORRECT + "#" + "\u00e9" * 200 + "\n").encode("punycode")
    report = grader.grade(source)
    assert report.score == 0
    assert "declares the encoding punycode, which is not accepted: save it as UTF-8" in report.errors[0]
    assert normalize(source) == []  # the similarity report refuses it as well (it tokenized the bytes)


def test_a_latin1_file_with_a_coding_line_is_read_as_python_reads_it(grader: Grader):
    source = ("# -*- coding: latin-1 -*-\n# Auteur : Renée\n" + CORRECT).encode("latin-1")
    report = grader.grade(source)
    assert report.score == 10, report.errors


def test_a_gradient_check_failure_in_the_backward_names_the_backward_call(grader: Grader):
    report = grader.grade(variant("    grad_x = grad_out * (x > 0)\n", "    raise RuntimeError('oops')\n"))
    message = check(report, 2, "gradient check").message
    assert "relu_backward raised RuntimeError: oops" in message
    assert "relu_backward(grad_out (2, 3), cache)" in message


def test_a_tuple_instead_of_an_array_gets_a_hint_about_the_extra_axis(grader: Grader):
    report = grader.grade(variant("    return grad_x\n", "    return (grad_x,)\n"))
    backward = check(report, 2, "backward")
    assert "grad_x has shape (1, 4, 5); expected (4, 5)" in backward.message
    assert "extra leading axis" in backward.hint


def test_a_slow_import_within_the_import_limit_still_scores(grader: Grader):
    # module-level work longer than the per-call limit (3 s) but within the import limit (10 s)
    source = "import time\n_start = time.monotonic()\nwhile time.monotonic() - _start < 4:\n    pass\n" + CORRECT
    report = grader.grade(source.encode())
    assert report.score == 10, report.errors


@pytest.fixture(scope="module")
def short_limits() -> Iterator[Grader]:
    """Half a second per call: a hang costs the tests little."""
    with Grader(workers=1, limits=Limits(time_limit=0.5, import_time_limit=2.0)) as grader:
        yield grader


def test_a_hang_on_one_input_costs_only_the_checks_of_that_input(short_limits: Grader):
    """A ReLU that hangs on 1-D input only: its other calls, the gradient check among them, still
    count, and the message names the case that hung (once, every relu_forward call failed, on case 1)."""
    report = short_limits.grade(variant("    out = np.maximum(0, x)\n", "    while x.ndim == 1:\n        pass\n"
                                        "    out = np.maximum(0, x)\n"))
    assert [p.score for p in report.problems] == [3, 1, 3, 2]
    forward = check(report, 2, "forward").message
    assert forward.startswith("relu_forward did not return within 0.5 s (on case ") and "relu_forward(x (" in forward
    assert check(report, 2, "gradient check").passed and check(report, 2, "backward").passed


def test_a_crash_on_one_input_costs_only_the_checks_of_that_input(short_limits: Grader):
    crash = "    if x.ndim == 1:\n        import ctypes\n        ctypes.string_at(0)\n    out = np.maximum(0, x)\n"
    report = short_limits.grade(variant("    out = np.maximum(0, x)\n", crash))
    assert [p.score for p in report.problems] == [3, 1, 3, 2]
    assert "relu_forward crashed with a segmentation fault" in check(report, 2, "forward").message


def test_a_hang_is_charged_at_once_and_a_crash_after_other_answers_runs_again_first(short_limits: Grader):
    """How many sandboxed processes a failure takes (the grades are the two tests' above). A hang is
    charged at once: running it again would cost the submission another time limit, so the second
    process carries on after it (once, a hang ran again in a fresh process first: three). A crash
    in a process that had answered other calls may have been caused by them, so the call runs again
    first in a fresh process, where it crashes again and is charged; a third carries on."""
    hang = variant("    out = np.maximum(0, x)\n", "    while x.ndim == 1:\n        pass\n    out = np.maximum(0, x)\n")
    segfault = "    if x.ndim == 1:\n        import ctypes\n        ctypes.string_at(0)\n"
    crash = variant("    out = np.maximum(0, x)\n", segfault + "    out = np.maximum(0, x)\n")
    for source, processes in ((CORRECT.encode(), 1), (hang, 2), (crash, 3)):
        parsed = parse_source(source, "layers.py")
        assert isinstance(parsed, ParsedSource)
        assert short_limits.run(parsed.code).processes == processes


def test_a_submission_can_use_tempfile_in_its_scratch(grader: Grader):
    """TMPDIR names the run's scratch, and tempfile finds it there: once, tempfile kept the folder the
    zygote had looked up for itself (outside the sandbox's reach), and such a file scored 0."""
    scratch = ("import tempfile\n"
               "with tempfile.TemporaryDirectory() as _folder, tempfile.NamedTemporaryFile(dir=_folder) as _f:\n"
               "    _f.write(b'notes')\n"
               "_fd, _path = tempfile.mkstemp()\n")
    report = grader.grade((scratch + CORRECT).encode())
    assert report.score == 10, report.errors


def test_a_gradient_checks_time_limit_covers_its_calls_together_and_says_so(short_limits: Grader):
    """The per-call limit covers the 24 nudged calls of the ReLU gradient check together (each one
    with a limit of its own let one slow check use up the whole submission's time), and the message
    says so rather than claim that one call took that long."""
    report = short_limits.grade(variant("    out = np.maximum(0, x)\n", "    import time\n    time.sleep(0.05)\n"
                                        "    out = np.maximum(0, x)\n"))
    assert [p.score for p in report.problems] == [3, 1.5, 3, 2]
    assert check(report, 2, "gradient check").message.startswith(
        "relu_forward did not finish the 24 calls of the gradient check (each element of x nudged 4 times) "
        "within 0.5 s (on case 1 of 1")


def test_a_backward_given_the_documented_cache_says_so_when_it_fails(grader: Grader):
    """fc_forward with a dict cache that fails on one case: fc_backward then gets the documented
    tuple and fails on it, and the message says why it was not the student's own cache."""
    dict_cache = "    assert x.shape[0] > 1, 'need a batch'\n    out = x.dot(w) + b\n    cache = {'x': x, 'w': w}\n"
    source = variant("    out = x.dot(w) + b\n    cache = (x, w, b)\n", dict_cache)
    source = source.replace(b"    x, w, b = cache\n", b"    x, w = cache['x'], cache['w']\n", 1)
    report = grader.grade(source)
    message = check(report, 1, "grad_x").message
    assert "tuple indices must be integers" in message
    assert "it was given the documented cache (x, w, b), because your fc_forward did not return a usable one" in message


def test_a_forward_that_forgets_its_cache_leaves_a_correct_backward_its_points(grader: Grader):
    """`return out` instead of `return out, cache`: the forward's checks fail, and the backward is
    given the documented cache (once, it was given row 1 of `out` and blamed for it)."""
    fc = grader.grade(variant("    cache = (x, w, b)\n    return out, cache\n", "    return out\n"))
    assert [p.score for p in fc.problems] == [1.5, 2, 3, 2]
    assert check(fc, 1, "forward").message.startswith("fc_forward must return a tuple (out, cache)")
    assert check(fc, 1, "grad_x").passed and "documented cache" in check(fc, 1, "grad_x").message
    relu = grader.grade(variant("    cache = x\n    return out, cache\n", "    cache = x\n    return out\n"))
    assert [p.score for p in relu.problems] == [3, 0.5, 3, 2], messages_of(relu)
    assert check(relu, 2, "backward").passed


def test_a_forward_that_refills_one_buffer_passes_its_gradient_check(grader: Grader):
    """Each nudged output is copied as it comes back, as CS231n's own checker does (`f(x).copy()`):
    once, 24 references to one refilled buffer made the gradient look zero ("relu_forward ignores x")."""
    buffered = ("    out = _buffers.setdefault(x.shape, np.empty(x.shape))\n"
                "    np.maximum(x, 0, out=out)\n")
    report = grader.grade(b"_buffers = {}\n" + variant("    out = np.maximum(0, x)\n", buffered))
    assert report.score == 10, messages_of(report)


def test_file_names_the_submissions_own_file(grader: Grader):
    """As in any import, `__file__` is an absolute path to the file itself: `os.chdir(os.path.dirname(
    __file__))`, `open(__file__)` and `inspect.getsource` work (once, `__file__` was a bare name that
    existed nowhere, and each of these scored 0)."""
    idioms = ("import hashlib, inspect, os\n"
              "os.chdir(os.path.dirname(__file__))\n"
              "with open(__file__, 'rb') as _own:\n"
              "    DIGEST = hashlib.md5(_own.read()).hexdigest()\n"
              "assert os.path.isabs(__file__) and os.path.basename(__file__) == 'layers.py', __file__\n")
    source = idioms + CORRECT + "\nassert 'def softmax_loss' in inspect.getsource(softmax_loss)\n"
    report = grader.grade(source.encode())
    assert report.score == 10, report.errors


def test_a_leftover_breakpoint_or_input_is_named_in_the_feedback(grader: Grader):
    """The grader has no terminal: a debugger quits and input() reads nothing. The feedback says what
    was left in the code, not only the exception's name."""
    paused = grader.grade(variant("    out = np.maximum(0, x)\n", "    breakpoint()\n    out = np.maximum(0, x)\n"))
    assert "a breakpoint() or pdb.set_trace() was left in the code" in check(paused, 2, "forward").message
    asked = grader.grade(("name = input('your name: ')\n" + CORRECT).encode())
    assert asked.score == 0 and "input() was left in the code" in asked.errors[0], asked.errors


def test_the_command_line_a_submission_sees_is_its_own(grader: Grader):
    """A module-level argparse (a student's script mode) parses `layers.py` alone: once, the
    zygote's own command line (with the grader's install path) made it exit, and the file scored 0."""
    script = ("import argparse, sys\n"
              "assert sys.argv == ['layers.py'], sys.argv\n"
              "ARGS = argparse.ArgumentParser().parse_args()\n")
    report = grader.grade((script + CORRECT).encode())
    assert report.score == 10, report.errors


def test_float32_results_are_told_to_compute_in_float64(grader: Grader):
    """float32 falls short of the tolerance: the hint names the precision, not a wrong formula."""
    single = "    out = x.astype(np.float32).dot(w.astype(np.float32)) + b.astype(np.float32)\n"
    report = grader.grade(variant("    out = x.dot(w) + b\n", single))
    forward = check(report, 1, "forward")
    assert not forward.passed
    assert forward.hint.startswith("Your out is float32, which carries about 7 significant digits: compute in float64")
    report = grader.grade(variant("    grad_w = reg * w\n", "    grad_w = (reg * w).astype(np.float32)\n"))
    assert check(report, 4, "gradient check").hint.startswith("Your grad_w is float32")


def test_calls_answered_before_a_function_breaks_keep_their_points(short_limits: Grader):
    """softmax_loss hangs on two of the stability cases only: the second hang stops the function,
    but its calls that had already answered keep their points (they once failed with it), and the
    call the stop left unrun says so."""
    hang = "    while np.abs(x).max() > 5e3 and np.abs(x).max() < 2e5:\n        pass\n    N = x.shape[0]\n"
    report = short_limits.grade(variant("    N = x.shape[0]\n    shifted", hang + "    shifted"))
    assert [p.score for p in report.problems] == [3, 2, 2, 2]
    assert check(report, 3, "loss").passed and check(report, 3, "gradient").passed
    stable = check(report, 3, "numerically stable").message
    assert stable.startswith("softmax_loss did not return within 0.5 s (on case 2 of 5"), stable
    assert check(report, 3, "gradient check").message.startswith(
        "not run, because softmax_loss did not return within 0.5 s on two other calls")


def test_a_function_stopped_after_two_failures_says_its_other_calls_did_not_run(short_limits: Grader):
    crash = "    if x.shape[0] != 2:\n        import ctypes\n        ctypes.string_at(0)\n    out = x.dot(w) + b\n"
    report = short_limits.grade(variant("    out = x.dot(w) + b\n", crash))
    forward = check(report, 1, "forward").message
    assert forward.startswith("fc_forward crashed with a segmentation fault (SIGSEGV) (on case 1 of 5"), forward
    assert "not run, because fc_forward crashed with a segmentation fault (SIGSEGV) on two other calls" in messages_of(
        report)


def test_a_crash_that_what_ran_before_caused_is_not_charged(short_limits: Grader):
    """relu_forward leaves state behind that makes softmax_loss crash in the same process: softmax_loss
    runs again in a fresh process, where it is fine, and nothing is charged (once, the honest
    function lost its points)."""
    leave = "    os.environ['LEFT_BEHIND'] = '1'\n    out = np.maximum(0, x)\n"
    source = variant("    out = np.maximum(0, x)\n", leave)
    source = source.replace(b"    N = x.shape[0]\n    shifted", b"    if os.environ.get('LEFT_BEHIND'):\n"
                            b"        import ctypes\n        ctypes.string_at(0)\n    N = x.shape[0]\n    shifted", 1)
    report = short_limits.grade(b"import os\n" + source)
    assert report.score == 10, messages_of(report)


def test_calls_answered_before_the_submission_ran_out_of_time_keep_their_points(short_limits: Grader):
    """Every call takes 0.1 s: the submission's time (2 s import + 0.5 s per function + 1 s) runs out
    part way, and the calls answered before it keep their results."""
    slow = "import time\n_sleep = time.sleep\n"
    report = short_limits.grade((slow + CORRECT.replace("    return ", "    _sleep(0.1)\n    return ")).encode())
    assert check(report, 1, "forward").passed
    assert "not finished: the submission used up the 6 s" in messages_of(report)


def messages_of(report: SubmissionReport) -> str:
    return " | ".join(c.message for p in report.problems for c in p.checks)



def test_a_gradient_check_left_unrun_by_two_hangs_says_it_did_not_run(short_limits: Grader):
    """Its message once claimed the nudged calls had run out of time."""
    report = short_limits.grade(variant("    out = x.dot(w) + b\n", "    while x.size >= 25:\n        pass\n"
                                        "    out = x.dot(w) + b\n"))
    assert check(report, 1, "gradient check").message.startswith(
        "not run, because fc_forward did not return within 0.5 s on two other calls"), messages_of(report)
