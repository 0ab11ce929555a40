"""One way to tell a user what failed: one `error: ...` line on stderr, whatever the message held."""

from face_match_age.error_messages import error_line, error_summary, print_error


def test_a_message_over_several_lines_becomes_one_line():
    error = RuntimeError("weights missing.\n  file:   a.pt\n  folder: /cache\nDownload it.")
    assert error_line(error) == "error: weights missing. file: a.pt folder: /cache Download it."


def test_print_error_writes_the_line_to_stderr(capsys):
    print_error("no face found in\na.jpg")
    captured = capsys.readouterr()
    assert captured.err == "error: no face found in a.jpg\n"
    assert captured.out == ""


def test_a_library_error_is_summarised_by_its_type_and_first_line():
    error = RuntimeError("Error(s) in loading state_dict:\n\tMissing key(s): conv.weight")
    assert error_summary(error) == "RuntimeError: Error(s) in loading state_dict:"


def test_an_empty_library_error_is_summarised_by_its_type():
    assert error_summary(EOFError()) == "EOFError"


def test_missing_weights_in_model_check_are_one_error_line(empty_torch_home, capsys):
    import model

    assert model.main(["--pretrained", "vggface2"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("download of")]
    assert len(lines) == 1
    assert lines[0].startswith("error: The pretrained 'vggface2' InceptionResnetV1 weights are not on this machine")
