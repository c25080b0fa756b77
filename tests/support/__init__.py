"""What the tests share: servers, clients, fixtures and the contract as the tests read it.

Holds no test itself. Import from the module that does the job (this package re-exports nothing):

The test run
    ``timing``       timeouts scaled by ``LIVEBOARD_TEST_TIMEOUT_FACTOR``; ``wait_until``
    ``tokens``       the test secret, tokens, ``Authorization`` headers, unique user ids
    ``contract``     status → error code, JSON shapes, event types, room names; their assertions
    ``protocol_schema`` messages checked against the AsyncAPI document's schemas (closed)
    ``postgres``     the PostgreSQL server, fresh databases, a module's own ``database_url``

Servers
    ``app``          the in-process app's settings (``make_settings``) and factory type
    ``rest``         ``Board`` over the in-process app, recording what it publishes
    ``servers``      ``LiveboardProcess``: a real ``liveboard serve``; ``free_port``
    ``redis_server`` a private ``redis-server``, restartable and pausable
    ``tcp_proxy``    a TCP proxy that can pause or cut a link (partition tests)
    ``probes``       a server seen from outside: ``/metrics``, ``/healthz``, ``/proc``

Clients
    ``wsclient``     ``WsClient``: aiohttp's WebSocket, read in the background
    ``board``        ``Board`` over a ``liveboard serve``: users, REST set-up, connections
    ``frames``       WebSocket frames encoded exactly as told, violations included
    ``rfc_cases``    frames that break RFC 6455 or the contract, with the close code due
    ``rawws``        ``RawWs``: a client on a raw socket, for hostile tests
    ``fakes``        a transport that records writes, a hub listener, an event factory

Clusters
    ``cluster``      instances on one database and one Redis; the ``cluster`` fixtures
    ``cluster_setup`` a shared board, subscribers and presence across the instances
    ``watcher``      everything one connection receives, with arrival times; sequence checks
    ``writers``      concurrent PATCH loops, every answer recorded
    ``drain``        many cheap connections that count frames

Fixtures every test can use are in ``tests/conftest.py`` (databases, the in-process app,
``server_factory``) and ``tests/integration/conftest.py`` (a module's server and board, Redis,
the cluster); a module that needs one of the overrides here (``postgres``'s ``database_url``,
``rest``'s ``board``) imports it.
"""
