"""The main job, from a fresh machine: boot the lab kernel, build a scene of named
dma-bufs, show what dmabuf-top sees of them, then load a 64 MiB file into buffers by
every method people compare and show what each really costs (`validate`), with an
HTML report of the comparison.

    python -m dmabuf_top.demo            # on the host: boots the guest, writes results/report.html
    python -m dmabuf_top.demo --inside [RESULTS_DIR]   # in a kernel with dma-bufs: the scene, the views, the matrix
"""
import os
import sys
from collections import Counter

from .errors import DmabufTopError
from .text import human_size, terminal_safe


def show_inside():
    from .inventory.bufinfo import read_bufinfo
    from .features import detect
    from .probes.dmabuf_iter import read_buffers
    from .scene import build

    report = detect()
    hooks = [name for name in report.features if name.startswith("fn/")]
    live = [name for name in hooks if report.available(name)]
    print(f"kernel {report.kernel['release']}")
    for name in ("iter/dmabuf", "fentry", "kprobe", "heaps", "udmabuf"):
        feature = report.features[name]
        print(f"  {name:<12} {'yes' if feature.available else 'no '}  {feature.detail}")
    print(f"  traced functions available: {len(live)} of {len(hooks)} (see 'dmabuf-top doctor')")

    scene = build()
    print(f"\nbuilt a scene of {len(scene)} dma-bufs; the kernel's list, read by iter/dmabuf:\n")
    buffers = sorted(read_buffers(), key=lambda b: b.inode)
    print(f"{'INODE':>6} {'EXPORTER':<9} {'SIZE':>10} {'REFS':>4}  {'BACKING':<10} NAME")
    for buffer in buffers:
        backing = f"memfd:{buffer.backing_inode}" if buffer.backing_inode else "-"
        print(f"{buffer.inode:>6} {buffer.exporter:<9} {human_size(buffer.size):>10} {buffer.file_refs:>4}  "
              f"{backing:<10} {terminal_safe(buffer.name)}")
    per_exporter = Counter()
    for buffer in buffers:
        per_exporter[buffer.exporter] += buffer.size
    print("\nper exporter: " + ", ".join(f"{name} {human_size(size)}" for name, size in sorted(per_exporter.items())))
    bufinfo = read_bufinfo()
    agree = sorted((b.inode, b.size, b.exporter, b.name) for b in buffers) == sorted(
        (b.inode, b.size, b.exporter, b.name) for b in bufinfo.buffers
    )
    print(f"debugfs bufinfo lists {bufinfo.total_objects} buffers, {human_size(bufinfo.total_bytes)}: "
          f"{'the same inodes, sizes, exporters and names' if agree else 'DIFFERENT from the iterator'}")

    freed = scene.pop(1)
    freed.close()
    print(f"closed {terminal_safe(freed.name)}: the iterator now lists {len(read_buffers())} buffers")
    for buffer in scene:
        buffer.close()
    return 0 if agree else 1


DEMO_SIZE = 64 << 20
SCRATCH = "/mnt/scratch"


def show_validate(results_dir=None):
    """The method matrix on a 64 MiB file (page cache dropped before each method), its table, and the report."""
    from .validate import render, runner

    print(f"\nloading a {human_size(DEMO_SIZE)} file from ext4/NVMe into buffers, every way (dmabuf-top validate):\n")
    run = runner.run_matrix(SCRATCH, DEMO_SIZE)
    print(render.render_table(run))
    failed = [r for r in run.results if r.checksum == "mismatch"]
    if results_dir:
        import tempfile
        import warnings

        # The guest's root is read-only: matplotlib's cache goes to a scratch directory, and its advice stays quiet.
        os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="matplotlib-"))
        warnings.simplefilter("ignore", UserWarning)
        from .analysis.html import HtmlRenderer
        from .recording.session import Session
        from .validate.store import record_run

        session_path = os.path.join(results_dir, "validate.session")
        record_run(run, session_path, overwrite=True)
        report_path = os.path.join(results_dir, "report.html")
        with Session(session_path) as session, open(report_path, "w", encoding="utf-8") as out:
            HtmlRenderer().render(session, out)
        print(f"\nwrote {report_path} (the method comparison) and {session_path}")
    return 1 if failed else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--inside"]:
            status = show_inside()
            return show_validate(argv[1] if len(argv) > 1 else None) or status
        from pathlib import Path

        from .kernel.lab import run_in_guest

        results = Path("results").resolve()
        results.mkdir(exist_ok=True)
        result = run_in_guest([sys.executable, "-m", "dmabuf_top.demo", "--inside", str(results)],
                              results_dir=results, timeout=600,
                              on_output=lambda chunk: (sys.stdout.buffer.write(chunk), sys.stdout.flush()))
        if result.exit_code == 0 and (results / "report.html").exists():
            print(f"\ndmabuf-top demo: open {results / 'report.html'} in a browser")
        return result.exit_code
    except DmabufTopError as error:
        print(f"dmabuf-top demo: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
