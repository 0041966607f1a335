"""Pure trading logic of topology stages: no Faust, no Kafka, no wall clock.

One module per stage: ``voting`` (ensemble), ``supervisor``, ``risk``, ``exits`` (exit planner),
``paper`` (execution: paper venue and position monitor); ``ids`` and ``types`` are shared. The
strategy and learning stages' rules live in their stage modules (:mod:`streams.stages.strategy`).
Agents decode a record, call these functions, store the returned state (``to_dict``) in a table
and send the result.
"""
