"""`dmabuf-top export --listen ADDR:PORT`: Prometheus metrics, sampled on each scrape."""
import click

from ..prometheus import DEFAULT_TOP, DEFAULT_TOP_CGROUPS


@click.command()
@click.option("--listen", default="127.0.0.1:9464", show_default=True, metavar="ADDR:PORT",
              help="Where to serve /metrics (0.0.0.0:PORT for every interface).")
@click.option("--top", type=click.IntRange(min=1), default=DEFAULT_TOP, show_default=True,
              help="Buffers and processes given their own label values; the rest are aggregated.")
@click.option("--top-cgroups", type=click.IntRange(min=1), default=DEFAULT_TOP_CGROUPS, show_default=True,
              help="Cgroups given their own label values (most dma-buf bytes held); the rest summed as "
              "cgroup=\"other\". A buffer held from two cgroups counts in both (dmabuf_cgroups_shared_bytes "
              "counts it once).")
@click.option("--no-trace", is_flag=True, help="Inventory only: do not attach the I/O path hooks.")
def command(listen, top, top_cgroups, no_trace):
    """Serve dma-buf gauges (per exporter, buffer, process, cgroup) and I/O path counters to Prometheus (needs root)."""
    from ..features import require_bpf_privileges
    from ..prometheus import DmabufCollector, parse_listen, serve
    from ..sampler import Sources, sigterm_exits

    address, port = parse_listen(listen)
    require_bpf_privileges("the Prometheus exporter")
    # creations: the creators' cgroups, for dmabuf_cgroup_created_bytes (no stacks: nothing here shows them)
    with sigterm_exits(), Sources(trace=not no_trace, taskstats=False, creations=True) as sources:
        for sentence in sources.cannot_see:
            click.echo(f"dmabuf-top export: cannot see: {sentence}", err=True)
        click.echo(f"dmabuf-top export: serving http://{address}:{port}/metrics", err=True)
        serve(address, port, DmabufCollector(sources.take_inventory, sources.tracer, top, top_cgroups,
                                             sources.creations))
