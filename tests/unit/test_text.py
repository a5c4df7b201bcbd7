from hypothesis import given
from hypothesis import strategies as st

from dmabuf_top.text import human_size, terminal_safe


def test_escape_sequences_and_newlines_are_neutralised():
    shown = terminal_safe(b"\x1b[2J\x1b[31mred\nsecond line\tx\x07")
    assert shown == "\\x1b[2J\\x1b[31mred\\nsecond line\\tx\\x07"


def test_invalid_utf8_is_shown_as_bytes():
    assert terminal_safe(b"\xff\xfeok") == "\\xff\\xfeok"


def test_backslashes_cannot_fake_an_escape():
    assert terminal_safe(b"\\x1b") == "\\\\x1b"
    assert terminal_safe(b"\\x1b") != terminal_safe(b"\x1b")


def test_unnamed():
    assert terminal_safe(None) == "<unnamed>"


@given(st.binary(max_size=64))
def test_any_name_becomes_one_printable_line(raw):
    shown = terminal_safe(raw)
    assert shown.isprintable()


@given(st.binary(max_size=32), st.binary(max_size=32))
def test_different_names_stay_different(a, b):
    if a != b:
        assert terminal_safe(a) != terminal_safe(b)


def test_human_size():
    assert human_size(512) == "512 B"
    assert human_size(4 << 20) == "4.0 MiB"
    assert human_size(3 << 30) == "3.0 GiB"
