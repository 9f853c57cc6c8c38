"""tcplb: a layer-4 (TCP) load balancer for RabbitMQ, HAProxy ``mode tcp`` in pure Python (uvloop by default).

``tcplb -c lb.toml``; see README.md, "tcplb reference".
Modules: ``config`` (TOML -> frozen dataclasses), ``balance``,
``health``, ``tcplog`` (pure policy), ``relay`` (the data path), ``server`` (listeners, dispatch, queues,
retries, reload), ``checks`` (active health checks), ``stats`` (stats page and admin API), ``daemon``
(signals, lifecycle).
"""
