"""``python -m bnas_tf.search``: the ``bnas-search`` program."""

from bnas_tf.apps.search import run

run()
