"""Forked validation in this process: the fence and the report, without a kernel around it."""

import os

from jupyter_specgen.kernel.validate import ValidateOptions, validate


def test_writes_are_refused_even_through_os_level_calls(tmp_path):
    """os.open for writing, mmap of a writable file and a C-level write all fail; the file stays as it was."""
    target = tmp_path / "f.bin"
    target.write_bytes(b"0123")
    fd = os.open(target, os.O_RDWR)  # inherited: the child must not be able to use it
    try:
        code = [
            f"os.open({str(target)!r}, os.O_WRONLY)",
            f"import mmap\nm = mmap.mmap(os.open({str(target)!r}, os.O_RDONLY), 4, access=mmap.ACCESS_WRITE)",
            f"os.write({fd}, b'XXXX')",
        ]
        verdicts = validate({}, code, prefix="import os\n", options=ValidateOptions(timeout_s=5))
    finally:
        os.close(fd)
    # the inherited fd is closed, and seccomp refuses writes to any fd but the report pipe and /dev/null
    assert [(v.status, v.error_type) for v in verdicts] == [
        ("raised", "PermissionError"), ("raised", "PermissionError"), ("raised", "PermissionError")]
    assert target.read_bytes() == b"0123"


def test_outputs_are_bounded_and_the_value_is_described():
    """stdout beyond the cap is cut with a count; the last expression's value comes back as a spec."""
    (v,) = validate({"n": 3}, ["print('x' * 10000)\n[n] * n"], options=ValidateOptions(output_chars=100, timeout_s=5))
    assert v.status == "ran" and v.stdout.startswith("x" * 100) and "more characters" in v.stdout
    assert (v.value.kind, v.value.length, v.value.examples) == ("container", 3, "[3, 3, 3]")


def test_syntax_errors_report_their_line():
    """A candidate that does not parse (and is not an unfinished statement) is 'raised' SyntaxError at its line."""
    (v,) = validate({}, ["x = )\n"], prefix="a = 1\n", options=ValidateOptions(timeout_s=5))
    assert (v.status, v.error_type, v.line) == ("raised", "SyntaxError", 2)
