"""The verdict table and its evidence, as text (pure: tested without a kernel)."""
from ..stacks import kernel_frames
from ..text import human_size, terminal_safe
from ..trace_model import NOT_TRACED

COLUMNS = (  # header, width, right-aligned
    ("METHOD", 26, False), ("ALLOC ms", 9, True), ("I/O ms", 9, True), ("MB/s", 8, True), ("COPIES", 7, True),
    ("DEV->BUF", 8, True), ("PAGECACHE", 10, True), ("PINNED", 7, True), ("CALLS", 6, True), ("DATA", 5, True),
    ("VERDICT", 0, False))


def _ms(value):
    return "-" if value is None else f"{value:.1f}"


def _count(value):
    return NOT_TRACED if value is None else str(value)


def _share_of_payload(measured, result):
    """measured bytes / payload; n/t when not measured, '-' for a method that never loaded anything."""
    if measured is None:
        return NOT_TRACED
    if not result.payload or result.verdict.kind in ("failed", "absent"):
        return "-"
    return f"{measured / result.payload:.2f}"


def _copies(result):
    return _share_of_payload(result.cpu_copied, result)


def _device_to_buffer(result):
    """The device's writes into the buffer's own frames / payload; n/t without DMA evidence."""
    return _share_of_payload(result.device_to_buffer, result)


def row_cells(result):
    # Absent, or failed before its I/O: nothing was measured ('-'), which is not "not traced" (n/t).
    absent = result.verdict.kind == "absent" or result.syscalls is None
    mb_s = result.mb_s
    return (
        terminal_safe(result.name),
        _ms(result.alloc_ms),
        _ms(result.io_ms),
        "-" if mb_s is None else f"{mb_s:.0f}",
        "-" if absent else _copies(result),
        "-" if absent else _device_to_buffer(result),
        "-" if absent else _count(result.page_cache_pages),
        "-" if absent else _count(result.pinned_pages),
        "-" if absent else str(result.syscalls),
        {"ok": "ok", "mismatch": "BAD", None: "-"}[result.checksum],
        terminal_safe(result.verdict.label),
    )


def _line(cells, first_width):
    parts = []
    for index, ((_, width, right), cell) in enumerate(zip(COLUMNS, cells)):
        width = first_width if index == 0 else width
        parts.append(cell.rjust(width) if right else (cell.ljust(width) if width else cell))
    return " ".join(parts).rstrip()


def render_table(run):
    """The verdict table, then what was not traced, then the file and cache conditions."""
    rows = [row_cells(result) for result in run.results]
    first_width = max([COLUMNS[0][1]] + [len(row[0]) for row in rows])  # method names never push columns
    lines = [_line([header for header, _, _ in COLUMNS], first_width)]
    lines += [_line(row, first_width) for row in rows]
    if run.source is not None:
        lines.append(f"file: {terminal_safe(run.source.path)} ({human_size(run.source.size)} on "
                     f"{run.source.filesystem}); "
                     f"page cache {'kept warm' if run.warm else 'dropped before each method'}")
    if run.command is not None:
        shown = " ".join(terminal_safe(arg) for arg in run.command)
        lines.append(f"command: {shown} (exit {run.command_exit}); payload = bytes that reached a dma-buf or memfd, "
                     "or the size of the buffers it held if larger")
    lines.append("COPIES = bytes copied by the CPU (seen by a hook) / payload; DEV->BUF = bytes the device wrote into "
                 "the buffer's own pages / payload (zero-copy needs 1.00); PAGECACHE, PINNED in pages; DATA = buffer "
                 "checksum equals the file's")
    for concern, why in sorted(run.missing.items()):
        lines.append(f"{NOT_TRACED} = not traced: {concern}: {terminal_safe(why)}")
    return "\n".join(lines)


# Where the tracer took the stack: the hooked function (its own frame is the probe's trampoline).
POINTS = {"cpu_copy_read": "copy at filemap_read", "cpu_copy_write": "copy at generic_perform_write",
          "gup": "pin at gup_fast_fallback/__get_user_pages"}


def short_stack(frames, depth=6):
    """The innermost kernel frames of a stack (our probe's own frames left out) as one line."""
    kernel = kernel_frames(frames)
    shown = [terminal_safe(frame) for frame in kernel[:depth]]
    return " <- ".join(shown) + (" <- ..." if len(kernel) > depth else "")


def render_evidence(run):
    """Per method: why the verdict is what it is, and the top kernel stacks of its copies and pins."""
    lines = []
    for result in run.results:
        if result.verdict.kind == "absent":
            continue
        lines.append(f"{terminal_safe(result.name)}: {terminal_safe(result.verdict.label)}")
        for reason in result.verdict.reasons:
            lines.append(f"    {terminal_safe(reason)}")
        for note in result.notes:
            lines.append(f"    note: {terminal_safe(note)}")
        for stack in result.evidence:
            amount = human_size(stack["amount"]) if stack["unit"] == "bytes" else f"{stack['amount']} pages"
            lines.append(f"    {POINTS.get(stack['point'], stack['point'])} in {stack['path']}(): {amount} "
                         f"over {stack['hits']} hits: "
                         f"{short_stack(stack['frames'])}")
    absent = [r for r in run.results if r.verdict.kind == "absent"]
    if absent:
        lines.append("absent on this kernel: " + ", ".join(
            f"{terminal_safe(r.name)} ({terminal_safe(r.verdict.reasons[0] if r.verdict.reasons else '')})"
            for r in absent))
    return "\n".join(lines)
