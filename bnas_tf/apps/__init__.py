"""The absl programs (``bnas-search``, ``bnas-train``, ...): flags and wiring only.

Flags are defined when a program starts (``define_flags``), never at import, so
the library and the tests can import every program module in one process. Importing
this package imports TensorFlow with its start-up notices filtered out
([`bnas_tf.apps.startup`][bnas_tf.apps.startup]), before any program module imports it.
"""

from bnas_tf.apps.startup import quiet_tensorflow_import

quiet_tensorflow_import()
