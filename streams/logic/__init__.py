"""Pure trading logic of every topology stage: no Faust, no Kafka, no wall clock.

One module per stage: ``regime`` + ``strategy`` + ``sizing`` (strategy and sizing stage),
``risk``, ``exits`` (exit planner), ``paper`` (execution: paper venue and position monitor),
``learning``; ``ids`` and ``types`` are shared. Agents decode a record, call these functions,
store the returned state (``to_dict``) in a table and send the result. The ensemble and
supervisor rules live in their stage modules (``streams/stages/ensemble.py``, ``supervisor.py``).
"""
