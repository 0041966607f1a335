"""The retraining worker (``quantum-trader trainer``): triggers, retrain, gate (docs/drift.md).

* :mod:`.triggers`: when to retrain (event-time schedule, drift with a cool-down), pure;
* :mod:`.retrain`: one retrain: recent ticks -> candidates -> shadow gate -> records;
* :mod:`.loop`: the Kafka consumer of ``market.ticks`` and ``models.events`` that drives them;
* :mod:`.publish`: ``models.events`` producer.
"""
