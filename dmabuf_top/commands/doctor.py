"""`dmabuf-top doctor`: what this kernel lets dmabuf-top see, tried for real."""
import json

import click

from ..features import detect

GROUPS = (
    ("Attach types", lambda name: name in ("tracepoint", "raw_tracepoint", "tp_btf", "fentry", "fexit", "kprobe",
                                           "kretprobe", "ringbuf")),
    ("Iterators", lambda name: name.startswith("iter/")),
    ("dma-buf sources", lambda name: name in ("heaps", "system_heap", "cma_heap", "udmabuf", "bufinfo")),
    ("Tracepoints", lambda name: name.startswith("tracepoint/")),
    ("Traced functions", lambda name: name.startswith("fn/")),
    ("Basics", lambda name: True),
)


def render_table(report):
    """The report as text, grouped; one line per feature: yes/no, how, why."""
    kernel = report.kernel
    lines = [f"kernel {kernel['release']} ({kernel['machine']}), BTF {'yes' if kernel['btf'] else 'no'}"]
    shown = set()
    for title, belongs in GROUPS:
        names = [name for name in report.features if name not in shown and belongs(name)]
        if not names:
            continue
        lines.append("")
        lines.append(title)
        width = max(len(name) for name in names)
        for name in names:
            shown.add(name)
            feature = report.features[name]
            verdict = "yes" if feature.available else "no "
            via = f" via {feature.via}" if feature.available and feature.via else ""
            lines.append(f"  {name:<{width}}  {verdict}{via}  {feature.detail}".rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: {kernel, features: {name: {available, via, detail}}}.")
def command(as_json):
    """Show which hooks, iterators, tracepoints and dma-buf devices this kernel offers (needs root)."""
    from ..probes.tracer import planned_attribution  # loads the BPF binding: not for --help

    report = detect()
    if as_json:  # the JSON keeps its shape ({kernel, features}): the trials there say the same
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        where, why = planned_attribution(report)
        click.echo(render_table(report))
        click.echo(f"\nI/O attribution (trace, the live view, export, record)\n  {where}: {why}")
