"""The durable SQLite store: :class:`~edge_agent.store.db.Database` (one writer thread, quarantine of a
damaged file), :class:`~edge_agent.store.outbox.Outbox` (messages awaiting their PUBACK, with limits and
counted drops), :class:`~edge_agent.store.history.History` (local aggregate history) and the pure outbox
rules in :mod:`~edge_agent.store.outbox_state`."""
