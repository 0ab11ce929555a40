"""One way to tell a user what failed: one `error: ...` line on stderr, unless the error is laid out on lines."""

from face_match_age.error_messages import MultiLineError, error_line, error_summary, print_error
from face_match_age.exit_codes import ExitCode


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


def test_a_multi_line_error_keeps_its_lines(capsys):
    class Laid(MultiLineError):
        pass

    print_error(Laid("weights missing.\n  file:   a.pt  \n\n  folder: /cache\nDownload it."))
    assert capsys.readouterr().err == "error: weights missing.\n  file:   a.pt\n  folder: /cache\nDownload it.\n"


def test_missing_weights_in_model_check_print_file_folder_url_cause_and_advice_on_lines(empty_torch_home, capsys):
    import model
    from face_match_age.network.weights import PRETRAINED

    assert model.main(["--pretrained", "vggface2"]) == ExitCode.MODEL
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("download of")]
    assert lines[0] == (
        "error: The pretrained 'vggface2' InceptionResnetV1 weights are not on this machine "
        "and could not be downloaded."
    )
    assert lines[1] == "  file:   20180402-114759-vggface2.pt"
    assert lines[2] == f"  folder: {empty_torch_home / 'checkpoints'}  (set TORCH_HOME to use another)"
    assert lines[3] == f"  url:    {PRETRAINED['vggface2'].url}"
    assert lines[4].startswith("  cause:  ")
    assert lines[5] == (
        "Download the file where there is internet access and copy it into that folder, "
        "or pass --pretrained none to start from random weights."
    )
    assert "..." not in err
