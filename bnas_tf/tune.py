"""``python -m bnas_tf.tune``: the ``bnas-tune`` program (see :mod:`bnas_tf.apps.tune`)."""

if __name__ == "__main__":
    from bnas_tf.apps.tune import run

    run()
