"""Every Redis key and channel the service uses, named in one place (docs/scale-out.md).

    snapshot(customer)  {<ns>:cust:<customer>}:snap   a customer's L2 snapshot (check/snapshot.py)
    journal             {<ns>:bus}:journal            the change stream's journal (kit/bus.py)
    journal_epoch       {<ns>:bus}:journal:epoch      the journal's epoch token
    channel             {<ns>:bus}:invalidate         the invalidation channel (kit/bus.py)

The braces are Redis Cluster hash tags: only the part inside them picks the slot. A
customer's keys share the slot of `{<ns>:cust:<customer>}`, so customers spread over the
shards and any multi-key operation on one customer stays on one node. The bus's keys and
its channel share the slot of `{<ns>:bus}`: the journal entry, the epoch token and the
sharded PUBLISH of one batch go in one MULTI on one node. A single Redis ignores the tags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyspace:
    namespace: str

    def snapshot(self, customer: str) -> str:
        return f"{{{self.namespace}:cust:{customer}}}:snap"

    @property
    def snapshot_pattern(self) -> str:
        """A SCAN pattern matching every customer's snapshot key."""
        return f"{{{self.namespace}:cust:*}}:snap"

    @property
    def journal(self) -> str:
        return f"{{{self.namespace}:bus}}:journal"

    @property
    def journal_epoch(self) -> str:
        return f"{{{self.namespace}:bus}}:journal:epoch"

    @property
    def channel(self) -> str:
        return f"{{{self.namespace}:bus}}:invalidate"
