"""OpenTelemetry tracing: optional (``pip install 'liveboard[otel]'``), off unless the standard
``OTEL_*`` variables turn it on (``tracing_settings.py``).

Only ``app.py`` imports this module, and only when tracing is on: without OpenTelemetry
installed liveboard imports and runs. The spans come from wrappers ``app.py`` chooses once, at
start (a ``Database`` whose ``write`` is traced, a publisher, a ``Node`` whose ``on_events`` is):
with tracing off the untraced classes run, and the hot path checks nothing at all. The spans:

* ``{METHOD} {route}`` (server): each REST request, a child of the caller's W3C
  ``traceparent`` when it sends one; ``http.route`` (``/api/tasks/{tid}``), the status, the
  request id of the log lines (``liveboard.request_id``), the client address. Its lines carry
  its trace id (``log_context.trace_id``).
* ``liveboard.transaction``: a write transaction, from ``BEGIN`` (on SQLite, from the wait for
  the write lock) to its commit or rollback; for a PATCH or DELETE on PostgreSQL, its read and
  its one write statement (``tasks.single_write``), from the connection's checkout to its
  return.
* ``liveboard.publish`` (producer): handing one transaction's committed events to the broker
  (once its turn in the room's line came, ``tasks/publish_order.py``); the first event's
  ``liveboard.room``, ``liveboard.offset`` and ``liveboard.epoch``, and ``liveboard.event_count``.
* ``liveboard.deliver`` (consumer): one per event per instance, around the hub's handling of
  the broker read that brought it (its room's ordering, and the fan-out of what that released:
  the same bytes to every socket, no span per socket). It starts a trace of its own and carries
  ``liveboard.room``, ``liveboard.offset``, ``liveboard.epoch``, ``liveboard.event_type``; the
  resource's ``service.instance.id`` names the instance. On the instance that published it, it
  links to the publish span. Elsewhere, the room and offset are the join: the broker carries no
  trace context between instances. Events read back from the log (a gap filled, a catch-up,
  the audit) are not traced.

The exporter's details (endpoint, headers, TLS, timeouts), the sampler (``OTEL_TRACES_SAMPLER``)
and the batch limits (``OTEL_BSP_*``) are read by the SDK from the standard variables.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard import __version__, log_context
from liveboard.events import EventPublisher
from liveboard.protocol import BrokerEvent, SequencedEvent
from liveboard.realtime.node import Node
from liveboard.store.database import Database
from liveboard.tracing_settings import TracingSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROOM: Final = "liveboard.room"
OFFSET: Final = "liveboard.offset"
EPOCH: Final = "liveboard.epoch"
#: How long a stop waits for the last spans to be exported (a collector that does not answer
#: must not hold the process past its shutdown deadline).
SHUTDOWN_WAIT: Final = 3.0

_propagator = TraceContextTextMapPropagator()
_ROOT: Final = Context()  # a delivery starts a trace of its own


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def _exporter(name: str) -> SpanExporter:
    if name == "console":  # one JSON object per span and line, on stdout
        return ConsoleSpanExporter(formatter=_one_line)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def start_tracing(settings: TracingSettings, instance_id: str) -> Tracing:
    """A tracer provider of this process's own, exporting to ``settings.exporters`` in the
    background (batched): a span costs the request a few microseconds, never an export."""
    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": __version__,
            "service.instance.id": instance_id,
        }
    )
    provider = TracerProvider(resource=resource)
    for name in settings.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return Tracing(provider)


class Tracing:
    """The spans of one liveboard instance, made with ``provider`` (not the global one: tests
    run several instances in one process, each with its own resource)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("liveboard", __version__)

    # REST requests

    def middleware(self, skip: frozenset[str] = frozenset()) -> Middleware:
        """The middleware that wraps each request in its server span (``skip``: paths passed
        straight through, the long-lived WebSocket routes). Put it outside the middleware that
        turns failures into error answers, so the span sees the status the client gets."""

        @web.middleware
        def traced(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
            if request.path in skip:
                return handler(request)
            return self._serve(request, handler)

        return traced

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes = {"http.request.method": request.method, "url.path": request.path}
        if route is not None:
            attributes["http.route"] = route
        request_id = request.get(log_context.REQUEST_ID_KEY)
        if request_id is not None:
            attributes["liveboard.request_id"] = request_id
        client = request.get(log_context.CLIENT_KEY, request.remote)
        if client is not None:
            attributes["client.address"] = client
        with self.tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=_propagator.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            trace = format(span.get_span_context().trace_id, "032x")
            request[log_context.TRACE_ID_KEY] = trace
            logged = log_context.trace_id.set(trace)  # every line of the request names it
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # an answer aiohttp writes (a redirect, an error)
                _set_status(span, exc.status)
                raise
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                log_context.trace_id.reset(logged)
            _set_status(span, response.status)
            return response

    # The write path and each instance

    def database(self, *args: Any, **kwargs: Any) -> Database:
        """``Database(*args, **kwargs)``, whose write transactions are traced."""
        db = _TracedDatabase(*args, **kwargs)
        db.tracing = self
        return db

    def publisher(self, publisher: EventPublisher) -> EventPublisher:
        """``publisher``, with a span around each hand-over of committed events."""
        return _TracedPublisher(self, publisher)

    def node(self, *args: Any, **kwargs: Any) -> Node:
        """``Node(*args, **kwargs)``, with a delivery span per event the broker hands it."""
        node = _TracedNode(*args, **kwargs)
        node.tracing = self
        return node

    @contextmanager
    def transaction(self, database: str) -> Iterator[None]:
        """A write transaction on ``database`` (``postgresql`` or ``sqlite``); an exception
        (a rollback) marks it failed."""
        with self.tracer.start_as_current_span(
            "liveboard.transaction", attributes={"db.system.name": database}
        ):
            yield

    @contextmanager
    def publishing(self, events: Sequence[BrokerEvent]) -> Iterator[None]:
        """Handing one transaction's committed ``events`` to the broker."""
        first = events[0]
        with self.tracer.start_as_current_span(
            "liveboard.publish",
            kind=SpanKind.PRODUCER,
            attributes={
                ROOM: first.room,
                OFFSET: first.offset,
                EPOCH: first.epoch,
                "liveboard.event_count": len(events),
            },
        ):
            yield

    @contextmanager
    def delivering(self, events: Sequence[SequencedEvent]) -> Iterator[None]:
        """One ``liveboard.deliver`` span per event of a broker read, around its hand-over to
        the hub."""
        publishing = get_current_span().get_span_context()
        links = [Link(publishing)] if publishing.is_valid else None
        spans = [
            self.tracer.start_span(
                "liveboard.deliver",
                context=_ROOT,
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    ROOM: event.room,
                    OFFSET: event.offset,
                    EPOCH: event.epoch,
                    "liveboard.event_type": event.type,
                },
            )
            for event in events
        ]
        try:
            yield
        finally:
            for span in spans:
                span.end()

    async def aclose(self) -> None:
        """Export what is left and stop, waiting at most ``SHUTDOWN_WAIT`` seconds (in a daemon
        thread: an exporter stuck on a dead collector cannot hold the process's exit)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def shut_down() -> None:
            try:
                self.provider.shutdown()
            finally:
                with suppress(RuntimeError):  # the loop closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, done)

        threading.Thread(target=shut_down, name="liveboard-tracing-shutdown", daemon=True).start()
        with suppress(TimeoutError):
            await asyncio.wait_for(done, SHUTDOWN_WAIT)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TracedDatabase(Database):
    """A ``Database`` whose write transactions are spans (``Tracing.database``)."""

    tracing: Tracing

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        with self.tracing.transaction("sqlite" if self.is_sqlite else "postgresql"):
            async with super().write() as conn:
                yield conn

    @asynccontextmanager
    async def driver_write(self) -> AsyncIterator[Any]:
        with self.tracing.transaction("postgresql"):
            async with super().driver_write() as conn:
                yield conn

    @asynccontextmanager
    async def write_driver(self) -> AsyncIterator[Any]:
        with self.tracing.transaction("postgresql"):
            async with super().write_driver() as driver:
                yield driver


class _TracedPublisher:
    def __init__(self, tracing: Tracing, publisher: EventPublisher) -> None:
        self._tracing = tracing
        self._publisher = publisher

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        if not events:
            return await self._publisher.publish(events)
        with self._tracing.publishing(events):
            return await self._publisher.publish(events)


class _TracedNode(Node):
    """A ``Node`` whose broker hand-overs are traced: with tracing off, ``Node`` itself runs,
    and the hot path has nothing to check."""

    tracing: Tracing

    def on_events(self, events: Sequence[SequencedEvent]) -> None:
        with self.tracing.delivering(events):
            super().on_events(events)


def _set_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:  # a 4xx is the client's mistake, not the server's (HTTP conventions)
        span.set_status(Status(StatusCode.ERROR))
