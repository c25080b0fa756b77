"""A transport for the receive-path benchmarks (``hub_cost``, ``receive_cost``,
``receive_ops``): it takes every write and never has anything buffered, so what is measured
is liveboard's own work per event, not the sockets'."""

from __future__ import annotations


class NullTransport:
    """A transport that takes every write and never has anything buffered."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False
