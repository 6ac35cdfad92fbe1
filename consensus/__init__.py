"""Replication and merge: gossip, anti-entropy, escrow, cosigning (pure state machines)."""
