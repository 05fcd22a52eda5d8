"""Pure sequence code: operations, compiler, and the sequencer program format (no I/O)."""
