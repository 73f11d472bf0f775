"""The models a sweep trains: the DiT families (dit) and their flow-matching objective (flow)."""
