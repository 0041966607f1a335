"""The operators' web dashboard (``quantum-trader dashboard``): a read model of the topics.

- :mod:`streams.dashboard.model`: the read model, pure (records in, bounded views out);
- :mod:`streams.dashboard.sources`: the topics of a run, a finished run folder, the model
  registry and the worker's health, as the model's inputs;
- :mod:`streams.dashboard.server`: the aiohttp server (JSON API, server-sent events, halt and
  resume) and the static pages in ``static/`` (plain JS; uPlot vendored, no CDN).

Nothing here is imported by the topology, and nothing happens at import time.
"""
