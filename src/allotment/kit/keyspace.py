"""Every Redis key and channel the service uses, named in one place (docs/scale-out.md).

    what                    one Redis                   a Redis Cluster (tagged)
    snapshot(customer)      <ns>:snap:<customer>        {<ns>:cust:<customer>}:snap
    journal                 <ns>:journal                {<ns>:bus}:journal
    journal_epoch           <ns>:journal:epoch          {<ns>:bus}:journal:epoch
    channel                 <ns>:invalidate             {<ns>:bus}:invalidate

The braces are Redis Cluster hash tags: only the part inside them picks the slot. A
customer's keys share the slot of `{<ns>:cust:<customer>}`, so customers spread over the
shards and any multi-key operation on one customer stays on one node. The bus's keys and
its channel share the slot of `{<ns>:bus}`: the journal entry, the epoch token and the
sharded PUBLISH of one batch go in one MULTI on one node. One Redis keeps the names it
always had, so processes of two versions still hear each other during an upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyspace:
    namespace: str
    tagged: bool = False  # a Redis Cluster's names

    def snapshot(self, customer: str) -> str:
        if self.tagged:
            return f"{{{self.namespace}:cust:{customer}}}:snap"
        return f"{self.namespace}:snap:{customer}"

    @property
    def snapshot_pattern(self) -> str:
        """A SCAN pattern matching every customer's snapshot key."""
        return self.snapshot("*")

    @property
    def journal(self) -> str:
        return f"{self._bus}:journal"

    @property
    def journal_epoch(self) -> str:
        return f"{self._bus}:journal:epoch"

    @property
    def channel(self) -> str:
        return f"{self._bus}:invalidate"

    @property
    def _bus(self) -> str:
        return f"{{{self.namespace}:bus}}" if self.tagged else self.namespace
