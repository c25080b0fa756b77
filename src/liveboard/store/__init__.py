"""Persistence: the database engine, the schema and its migrations, records and the event log."""
