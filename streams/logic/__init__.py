"""Pure trading logic of every topology stage: no Faust, no Kafka, no wall clock.

One module per stage: ``voting`` (ensemble), ``supervisor``, ``regime`` + ``strategy`` + ``sizing``
(strategy and sizing stage), ``learning`` (risk, exit planner and execution are whole in
``streams/stages``); ``ids`` and ``types`` are shared. Agents decode a record,
call these functions, store the returned state (``to_dict``) in a table and send the result.
"""
