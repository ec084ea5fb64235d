"""Speed benchmarks, run by hand (``benchmarks/README.md``): one module per benchmark, on the
shared ``runner`` (the measurement), ``report`` (the table writer), ``torch_peers`` (the PyTorch
peers) and ``common``."""
