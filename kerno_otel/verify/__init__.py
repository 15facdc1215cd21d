"""``audit verify``: the chain, seq, checkpoints and truncation, checked offline."""
