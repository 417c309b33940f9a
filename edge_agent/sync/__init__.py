"""MQTT sync: :class:`~edge_agent.sync.component.SyncComponent` runs the
:class:`~edge_agent.sync.publisher.Publisher` (outbox → broker), :mod:`~edge_agent.sync.commands` validates
and dispatches device commands, :mod:`~edge_agent.sync.mqtt` is the only paho adapter, and
:mod:`~edge_agent.sync.receiver` is the reference cloud receiver."""
