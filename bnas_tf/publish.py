"""``python -m bnas_tf.publish``: the ``bnas-publish`` program (see :mod:`bnas_tf.apps.publish`)."""

if __name__ == "__main__":
    from bnas_tf.apps.publish import run

    run()
