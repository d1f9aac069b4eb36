"""The absl programs (``bnas-search``, ``bnas-train``, ``bnas-evaluate``, ...): flags and wiring only.

Flags are defined when a program starts (``define_flags``), never at import, so
the library and the tests can import every program module in one process.
"""
