"""Sinks into the systems fleets run on: each a dispatch (or deliver) callable for a dispatcher.

Each engine has a module of its own, imported only by an application
that uses it, with an extra of its own in ``setup.cfg``: the core imports
none of them, and they import only the core's public names.

* :mod:`batchdispatch.sinks.redis`: ``RedisStreamSink``, ``XADD`` in one
  pipeline per batch (extra ``redis``);
* :mod:`batchdispatch.sinks.postgres`: ``PostgresSink``, ``COPY`` or
  ``executemany`` in one transaction per batch (extra ``postgres``);
* :mod:`batchdispatch.sinks.sqlalchemy`: ``TableSink``, a Core ``insert()``
  per batch (extra ``sqlalchemy``);
* :mod:`batchdispatch.sinks.django`: ``ModelSink``, ``bulk_create`` per
  batch (extra ``django``);
* :mod:`batchdispatch.sinks.rabbitmq`: ``RabbitMQSink``, publisher
  confirms per batch (extra ``rabbitmq``).

What every sink promises: a data error that cannot succeed is a
non-retryable failure of the items concerned (a
:class:`~batchdispatch.PartialFailure` where the others can be delivered),
while a lost connection is retryable; a forked child never uses its
parent's connections; secrets in URLs never reach a repr or a log line.
"""
