"""Replay in: recorded market files or a recorded topic range into the topology's topics.

* :mod:`.files`: a data set of market files into ``market.ticks`` (valid rows, with in-band
  watermarks) and ``deadletter`` (rejected rows, with their reason), paced or as fast as the
  broker takes them.
* :mod:`.topic`: the records of a topic whose record timestamp lies in a window, copied
  unchanged into another prefix (a backtest is a replay of a topic).
* :mod:`.watermarks`: the in-band event-time watermarks a file replay writes (and the demo's
  end of stream).

Broker trouble raises :class:`streams.kafka_io.KafkaIOError` subclasses; the errors below are
the replay's own.
"""

from __future__ import annotations


class ReplayError(Exception):
    """A replay cannot go on; the message names the topic, file or setting involved."""


class SameTopicError(ReplayError):
    """A topic replay would write into the topic it reads."""
