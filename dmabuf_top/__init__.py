"""dmabuf-top: BPF observability for Linux dma-buf I/O."""

__version__ = "0.1.0"
