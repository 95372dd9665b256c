"""The functional core: plain data and pure functions, no I/O (DESIGN §7)."""
