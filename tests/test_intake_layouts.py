"""Every layout a TA brings finds every student once, with the right file, or says why there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.engine.grading import Grader
from grader.intake import IntakeError, StudentResult, Submission, grade_intake, read_inputs
from tests.intake_fixtures import blackboard_entries, example, write_zip, zip_bytes

CORRECT = example("correct")
STARTER = example("starter")
KEEPDIMS = example("grad_b_keepdims")
NO_MASK = example("relu_backward_no_mask")


def by_key(intake_submissions: list[Submission]) -> dict[str, Submission]:
    return {s.key: s for s in intake_submissions}


def test_a_single_py_file_is_one_submission_named_after_it(tmp_path: Path) -> None:
    path = tmp_path / "jdoe_layers.py"
    path.write_bytes(CORRECT)
    intake = read_inputs([path])
    assert intake.layout == "files"
    [submission] = intake.submissions
    assert (submission.key, submission.status, submission.source) == ("jdoe_layers", "ok", CORRECT)


def test_a_students_zip_finds_layers_py_at_any_depth_and_ignores_junk(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "jdoe-hw5.zip", {
        "homework5_programming/neuralnet/layers.py": CORRECT,
        "homework5_programming/neuralnet/utils.py": "def helper(): pass\n",
        "homework5_programming/neuralnet/__pycache__/layers.cpython-311.pyc": b"\x00junk",
        "__MACOSX/homework5_programming/neuralnet/._layers.py": b"\x00\x05\x16\x07resource fork",
        "homework5_programming/.DS_Store": b"\x00",
    })
    intake = read_inputs([path])
    assert intake.layout == "student"
    [submission] = intake.submissions
    assert submission.key == "jdoe-hw5"
    assert submission.source == CORRECT
    assert submission.origin.endswith("homework5_programming/neuralnet/layers.py")
    assert submission.warnings == []


def test_a_students_project_with_scripts_beside_its_package_is_one_student(tmp_path: Path) -> None:
    """`src/layers.py` with train.py and test_layers.py beside it: the scripts import the layers
    module, so they are this student's, not two more students (once, hank vanished from the class
    table and `src`, `train` and `test_layers` appeared in it)."""
    hank = write_zip(tmp_path / "hank.zip", {
        "hw5/src/layers.py": CORRECT,
        "hw5/train.py": "from src.layers import fc_forward, relu_forward\n\nprint(fc_forward)\n",
        "hw5/test_layers.py": "import numpy as np\nimport layers\n\n\ndef test_fc():\n    assert layers\n",
        "hw5/README.txt": "run train.py",
    })
    alice = write_zip(tmp_path / "alice.zip", {"layers.py": CORRECT})
    intake = read_inputs([alice, hank])
    found = [(s.key, s.source, s.warnings) for s in intake.submissions]
    assert found == [("alice", CORRECT, []), ("hank", CORRECT, [])]
    assert read_inputs([hank]).layout == "student"


def test_a_students_file_that_imports_some_other_layers_module_is_still_a_student(tmp_path: Path) -> None:
    """Only an import of the layers module from the archive's own folder (or by its bare name) makes
    a file a script of the student beside it: `from keras.layers import Dense` in bob.py does not."""
    root = tmp_path / "class"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "layers.py").write_bytes(CORRECT)
    (root / "bob.py").write_bytes(b"from keras.layers import Dense\n" + KEEPDIMS)
    intake = read_inputs([root])
    assert intake.layout == "students"
    assert sorted(s.key for s in intake.submissions) == ["alice", "bob"]


def test_a_class_of_student_named_files_tells_no_one_they_misnamed_it(tmp_path: Path) -> None:
    """`<student>.py` is a documented way to name files in a class folder: no student is told that
    no layers.py was submitted (once, every one of them was)."""
    root = tmp_path / "class"
    root.mkdir()
    (root / "Zoë Müller.py").write_bytes(CORRECT)
    (root / "bob.py").write_bytes(KEEPDIMS)
    intake = read_inputs([root])
    assert intake.layout == "students"
    assert {s.key: s.warnings for s in intake.submissions} == {"Zoë Müller": [], "bob": []}


def test_several_copies_prefer_neuralnet_then_the_shallowest_with_a_warning(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", {
        "layers.py": STARTER,
        "old/backup/layers.py": KEEPDIMS,
        "hw5/neuralnet/layers.py": CORRECT,
    })
    [submission] = read_inputs([path]).submissions
    assert submission.source == CORRECT
    assert any("found 3 copies" in w and "graded hw5/neuralnet/layers.py" in w for w in submission.warnings)

    path = write_zip(tmp_path / "b.zip", {"deep/er/layers.py": STARTER, "deep/layers.py": CORRECT, "x.txt": "x"})
    [submission] = read_inputs([path]).submissions
    assert submission.source == CORRECT
    assert any("found 2 copies" in w for w in submission.warnings)


@pytest.mark.parametrize("name", ["Layers.py", "layers (1).py", "layers-2.py", "my_hw5_solution.py"])
def test_a_misnamed_file_is_still_graded_with_a_note(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "s.zip", {f"hw5/{name}": CORRECT, "hw5/README.md": "notes"})
    [submission] = read_inputs([path]).submissions
    assert submission.status == "ok"
    assert submission.source == CORRECT
    if name == "Layers.py":  # the same name in another case: graded, with a note of its own
        assert "hw5/Layers.py is named layers.py in the assignment; graded it" in submission.warnings
    else:
        assert any(f"graded hw5/{name} instead" in w for w in submission.warnings)


def test_a_zip_without_the_file_says_what_it_held(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "s.zip", {"hw5/neuralnet/utils.py": "x = 1\n", "hw5/neuralnet/train.py": "y = 2\n",
                                          "hw5/report.pdf": b"%PDF"})
    intake = read_inputs([path])
    assert intake.layout == "student"
    [submission] = intake.submissions
    assert submission.status == "not_found"
    assert submission.source is None
    assert "no layers.py found among" in submission.detail and "hw5/report.pdf" in submission.detail


def class_entries() -> dict[str, bytes | str]:
    return {
        "alice/hw5/neuralnet/layers.py": CORRECT,
        "alice/hw5/neuralnet/utils.py": "pass\n",
        "bob.py": KEEPDIMS,
        "carol.zip": zip_bytes({"carol-hw5/neuralnet/layers.py": NO_MASK, "__MACOSX/carol-hw5/._x": b"\x00"}),
        "dave/": b"",
        "erin/notes.txt": "I could not finish",
        "frank.rar": b"Rar!\x1a\x07\x00",
        "README.txt": "instructions for TAs",
    }


def check_class(intake_layout: str, submissions: dict[str, Submission], warnings: list[str]) -> None:
    assert intake_layout == "students"
    assert sorted(submissions) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert submissions["alice"].source == CORRECT
    assert submissions["bob"].source == KEEPDIMS
    assert submissions["carol"].source == NO_MASK
    assert (submissions["dave"].status, submissions["dave"].source) == ("no_files", None)
    assert submissions["erin"].status == "not_found" and "erin/notes.txt" not in submissions["erin"].detail
    assert "notes.txt" in submissions["erin"].detail
    assert submissions["frank"].status == "unreadable" and "only zip archives" in submissions["frank"].detail
    assert any("README.txt" in w for w in warnings)


def test_a_folder_of_students(tmp_path: Path) -> None:
    root = tmp_path / "class"
    for name, content in class_entries().items():
        target = root / name
        if name.endswith("/"):
            target.mkdir(parents=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    intake = read_inputs([root])
    check_class(intake.layout, by_key(intake.submissions), intake.warnings)


def test_a_zip_of_students_wrapped_in_a_folder(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "class.zip", {f"hw5-submissions/{k}": v for k, v in class_entries().items()})
    intake = read_inputs([path])
    check_class(intake.layout, by_key(intake.submissions), intake.warnings)


ASSIGNMENT = "Homework 5_ Neural nets"


def blackboard_class() -> dict[str, bytes | str]:
    entries = blackboard_entries(ASSIGNMENT, [
        ("jdoe", "Jane Doe", "2023-04-01-10-00-00", {"layers.py": STARTER}),
        ("jdoe", "Jane Doe", "2023-04-02-23-58-01", {"layers.py": CORRECT, "notes.txt": "done"}),
        ("asmith", "Adam Smith", "2023-04-02-12-00-00",
         {"hw5.zip": zip_bytes({"homework5_programming/neuralnet/layers.py": KEEPDIMS, "__MACOSX/._x": b"\x00"})}),
        ("bnone", "Bea None", "2023-04-02-13-00-00", {}),
        ("mary_k", "Mary Ann King", "2023-04-02-14-00-00", {"layers.py": NO_MASK}),
        ("cwu", "Chen Wu", "2023-04-01-09-00-00", {"layers.py": CORRECT}),
        ("cwu", "Chen Wu", "2023-04-03-09-00-00", {}),
    ])
    entries.update(blackboard_entries(ASSIGNMENT, [
        ("dlee", "Dana Lee", "2023-04-02-15-00-00", {"layers.py": CORRECT}),
    ], grade_label="Current Mark"))
    entries["Thumbs.db"] = b"\x00"
    entries["gradebook_notes.md"] = "not from Blackboard"
    return entries


def test_a_blackboard_download(tmp_path: Path) -> None:
    intake = read_inputs([write_zip(tmp_path / "gradebook_hw5.zip", blackboard_class())])
    assert intake.layout == "blackboard"
    assert intake.assignment == ASSIGNMENT
    students = by_key(intake.submissions)
    assert sorted(students) == ["asmith", "bnone", "cwu", "dlee", "jdoe", "mary_k"]
    jdoe = students["jdoe"]
    assert (jdoe.name, jdoe.source, jdoe.attempt) == ("Jane Doe", CORRECT, "2023-04-02 23:58:01")
    assert any("latest of 2 attempts" in w for w in jdoe.warnings)
    assert students["asmith"].source == KEEPDIMS
    assert students["asmith"].origin.endswith("hw5.zip:homework5_programming/neuralnet/layers.py")
    bnone = students["bnone"]
    assert (bnone.status, bnone.name, bnone.source) == ("no_files", "Bea None", None)
    assert (students["mary_k"].name, students["mary_k"].source) == ("Mary Ann King", NO_MASK)
    assert students["cwu"].status == "no_files" and "earlier attempt had files" in students["cwu"].detail
    assert (students["dlee"].name, students["dlee"].source) == ("Dana Lee", CORRECT)
    assert any("gradebook_notes.md" in w for w in intake.warnings)


def test_a_blackboard_student_who_sent_only_a_compiled_file_is_told_so(tmp_path: Path) -> None:
    entries = blackboard_class()
    entries.update(blackboard_entries(ASSIGNMENT, [
        ("pyconly", "Py Conly", "2023-04-02-16-00-00", {"layers.cpython-311.pyc": b"\xa7\r\r\n\x00"}),
    ]))
    students = by_key(read_inputs([write_zip(tmp_path / "gradebook_hw5.zip", entries)]).submissions)
    pyconly = students["pyconly"]
    assert pyconly.status == "not_found" and pyconly.source is None
    # the download does hold the file (it was not lost): it is just nothing to grade
    assert pyconly.detail == "the receipt lists only layers.cpython-311.pyc, which is not source code to grade"


def test_a_blackboard_download_without_receipts_keeps_underscored_usernames(tmp_path: Path) -> None:
    """Without the .txt receipts, the username is what follows the assignment name that every file
    starts with: `mary_k` stays `mary_k` (once it became `k`, whose grade that would have been)."""
    entries = {name: data for name, data in blackboard_class().items() if not name.endswith(".txt")}
    intake = read_inputs([write_zip(tmp_path / "gradebook_hw5.zip", entries)])
    assert intake.layout == "blackboard"
    assert sorted(s.key for s in intake.submissions) == ["asmith", "cwu", "dlee", "jdoe", "mary_k"]


def test_a_blackboard_download_unzipped_into_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "gradebook" / "inner"
    root.mkdir(parents=True)
    for name, content in blackboard_class().items():
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)
    intake = read_inputs([tmp_path / "gradebook"])
    assert intake.layout == "blackboard"
    assert by_key(intake.submissions)["jdoe"].source == CORRECT


def canvas_class() -> dict[str, bytes | str]:
    return {
        "doejane_12345_111_layers.py": CORRECT,
        "smithadam_LATE_23456_222_layers-1.py": KEEPDIMS,
        "leebo_late_34567_333_hw5.zip": zip_bytes({"hw5/neuralnet/layers.py": NO_MASK, "hw5/neuralnet/utils.py": ""}),
        "kimcho_45678_444_layers.py": STARTER,
        "kimcho_45678_555_layers-1.py": CORRECT,
        "parkjo_56789_666_report.pdf": b"%PDF-1.4",
        ".DS_Store": b"\x00",
    }


def test_a_canvas_download(tmp_path: Path) -> None:
    intake = read_inputs([write_zip(tmp_path / "submissions.zip", canvas_class())])
    assert intake.layout == "canvas"
    students = by_key(intake.submissions)
    assert sorted(students) == ["12345", "23456", "34567", "45678", "56789"]
    assert (students["12345"].name, students["12345"].late, students["12345"].source) == ("doejane", False, CORRECT)
    assert (students["23456"].late, students["23456"].source) == (True, KEEPDIMS)
    assert (students["34567"].late, students["34567"].source) == (True, NO_MASK)
    assert students["45678"].source == CORRECT  # the later upload (higher file id) of layers.py
    # the note names the uploads as Canvas named them, not "layers.py" twice
    assert ("found 2 copies of layers.py (kimcho_45678_555_layers-1.py, kimcho_45678_444_layers.py); graded "
            "kimcho_45678_555_layers-1.py") in students["45678"].warnings
    assert students["56789"].status == "not_found" and "report.pdf" in students["56789"].detail


def test_several_paths_are_several_students(tmp_path: Path) -> None:
    for folder, source in (("x", CORRECT), ("y", KEEPDIMS)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "layers.py").write_bytes(source)
    intake = read_inputs([tmp_path / "x" / "layers.py", tmp_path / "y" / "layers.py"])
    assert intake.layout == "files"
    assert {s.key: s.source for s in intake.submissions} == {"x": CORRECT, "y": KEEPDIMS}

    (tmp_path / "alice.py").write_bytes(CORRECT)
    write_zip(tmp_path / "alice.zip", {"layers.py": KEEPDIMS})
    intake = read_inputs([tmp_path / "alice.py", tmp_path / "alice.zip"])
    assert sorted(s.key for s in intake.submissions) == ["alice", "alice-2"]
    assert any("both named 'alice'" in w for w in intake.warnings)


def test_a_forced_layout_reads_a_folder_as_one_student(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(CORRECT)
    (tmp_path / "b.py").write_bytes(KEEPDIMS)
    assert read_inputs([tmp_path]).layout == "students"
    intake = read_inputs([tmp_path], layout="student")
    assert intake.layout == "student"
    [submission] = intake.submissions
    assert submission.status == "not_found"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.zip", None, "does not exist"),
    ("notes.txt", b"hello", "neither a .py file, a zip archive nor a folder"),
    ("class.rar", b"Rar!\x1a\x07\x00", "only zip archives can be read"),
])
def test_inputs_that_are_not_submissions_are_one_clear_error(tmp_path: Path, name: str, content: bytes | None,
                                                           message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(IntakeError, match=message):
        read_inputs([path])


def test_grading_a_class_gives_every_student_one_row(tmp_path: Path, grader: Grader,
                                                     expected_examples: dict[str, dict[str, object]]) -> None:
    intake = read_inputs([write_zip(tmp_path / "bb.zip", blackboard_class())])
    calls: list[tuple[int, int]] = []
    results = grade_intake(grader, intake, progress=lambda done, total, _r: calls.append((done, total)))
    assert [r.key for r in results] == [s.key for s in intake.submissions]
    assert sorted(calls) == [(n, 6) for n in range(1, 7)]
    rows: dict[str, StudentResult] = {r.key: r for r in results}
    assert rows["jdoe"].score == expected_examples["correct.py"]["score"]
    assert rows["asmith"].score == expected_examples["grad_b_keepdims.py"]["score"]
    assert rows["mary_k"].score == expected_examples["relu_backward_no_mask.py"]["score"]
    assert rows["bnone"].report is None and rows["bnone"].score is None and rows["bnone"].status == "no_files"
    payload = rows["bnone"].as_json()
    assert (payload["student"], payload["score"], payload["max_score"]) == ("bnone", None, 10)
    assert payload["name"] == "Bea None"
    graded = rows["jdoe"].as_json()
    assert graded["status"] == "graded" and graded["student"] == "jdoe" and len(graded["problems"]) == 4
    assert any("latest of 2 attempts" in w for w in graded["warnings"])


def test_a_utf16_receipt_still_names_the_student(tmp_path: Path) -> None:
    entries = blackboard_entries("HW5", [("kli", "Kai Li", "2023-04-02-10-00-00", {"layers.py": CORRECT})])
    receipt_name = "HW5_kli_attempt_2023-04-02-10-00-00.txt"
    text = entries[receipt_name]
    assert isinstance(text, str)
    entries[receipt_name] = text.encode("utf-16")
    [submission] = read_inputs([write_zip(tmp_path / "bb.zip", entries)]).submissions
    assert (submission.key, submission.name, submission.source) == ("kli", "Kai Li", CORRECT)


def test_a_source_too_large_to_grade_is_reported(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "s.zip", {"layers.py": CORRECT + b"#" * (1024 * 1024)})
    [submission] = read_inputs([path]).submissions
    assert submission.status == "too_large" and submission.source is None
    assert "more than the 1024 KB" in submission.detail


def test_an_empty_folder_or_zip_is_an_error_not_a_student(tmp_path: Path) -> None:
    """Once, an empty folder (or a zip with no entries) became a student named after it, exit 0."""
    (tmp_path / "emptydir").mkdir()
    empty_zip = write_zip(tmp_path / "empty.zip", {})
    for path in (tmp_path / "emptydir", empty_zip):
        with pytest.raises(IntakeError, match="is empty: there is nothing to grade"):
            read_inputs([path])


def test_a_forced_layout_that_finds_nobody_is_an_error(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "class.zip", {"alice/layers.py": CORRECT, "bob/layers.py": CORRECT})
    with pytest.raises(IntakeError, match="no submissions were found"):
        read_inputs([path], layout="blackboard")


def test_receipts_in_another_language_and_files_missing_from_the_download(tmp_path: Path) -> None:
    entries = blackboard_entries("Devoir 5", [
        ("amartin", "Anne Martin", "2023-04-02-10-00-00", {"layers.py": CORRECT}),
        ("lost", "Lou Lost", "2023-04-02-11-00-00", {"layers.py": CORRECT}),
    ])
    french = {"Name:": "Nom :", "Assignment:": "Devoir :", "Current Grade:": "Note actuelle :",
              "Original filename:": "Nom de fichier d'origine :", "\tFilename:": "\tNom du fichier :"}
    for name, content in list(entries.items()):
        if name.endswith(".txt") and isinstance(content, str):
            for english, other in french.items():
                content = content.replace(english, other)
            entries[name] = content
    del entries["Devoir 5_lost_attempt_2023-04-02-11-00-00_layers.py"]
    intake = read_inputs([write_zip(tmp_path / "bb.zip", entries)])
    students = by_key(intake.submissions)
    assert intake.assignment == "Devoir 5"
    assert (students["amartin"].name, students["amartin"].source) == ("Anne Martin", CORRECT)
    assert students["lost"].status == "not_found"
    assert "the receipt lists layers.py but the download does not contain it" in students["lost"].detail
