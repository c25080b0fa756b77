"""The WebSocket layer: protocol, ordering and recovery, hub, node, presence, brokers."""
