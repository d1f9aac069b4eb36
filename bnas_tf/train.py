"""``python -m bnas_tf.train``: the ``bnas-train`` program (see :mod:`bnas_tf.apps.train`)."""

if __name__ == "__main__":
    from bnas_tf.apps.train import run

    run()
