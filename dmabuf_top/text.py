"""Showing untrusted bytes (dma-buf names are set by any process) safely in a terminal."""

_SAFE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def terminal_safe(raw, none="<unnamed>"):
    """bytes -> one printable line: control bytes, escape sequences and invalid UTF-8 become \\xNN.

    The result cannot move the cursor, change colours, start a new line or be
    mistaken for a different name (backslashes are escaped too).
    """
    if raw is None:
        return none
    # surrogateescape maps each invalid byte to U+DC80+byte, so it can be shown as that byte.
    text = bytes(raw).decode("utf-8", "surrogateescape") if isinstance(raw, (bytes, bytearray)) else str(raw)
    out = []
    for char in text:
        if char in _SAFE_ESCAPES:
            out.append(_SAFE_ESCAPES[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def human_size(size):
    """Bytes as a short human string in binary units (4.0 MiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
