"""``python -m bnas_tf.evaluate``: the ``bnas-evaluate`` program (see :mod:`bnas_tf.apps.evaluate`)."""

if __name__ == "__main__":
    from bnas_tf.apps.evaluate import run

    run()
