"""Binary networks of searched cells as larq-zoo-style Keras models, with pretrained weights.

```python
import bnas_tf
from bnas_tf.zoo import BNASB, preprocess_input, decode_predictions

model = BNASB(weights="fashion_mnist")                    # trained on Fashion-MNIST
features = BNASB(weights="fashion_mnist", include_top=False, input_shape=(28, 28, 1))
print(bnas_tf.zoo.list_models(), bnas_tf.zoo.model_card("BNASB"))
```

Models ([`bnas_tf.zoo.specs`][bnas_tf.zoo.specs]): ``BNASA``, ``BNASB``, ``BNASC`` (Kim et al.'s
CIFAR cell), ``BNASD`` ... ``BNASH`` (Kim et al.'s ImageNet models), ``BNASXNOR`` (Chen et al.'s
XNOR cell), ``BNASFM`` (this project's cell searched on Fashion-MNIST), and any model published
under a new name with ``bnas-publish`` (``get``). Weights: the registry
([`bnas_tf.zoo.registry`][bnas_tf.zoo.registry]), filled by ``bnas-publish``
([`bnas_tf.zoo.publish`][bnas_tf.zoo.publish]).
"""

from bnas_tf.zoo import registry
from bnas_tf.zoo.cards import model_card
from bnas_tf.zoo.models import (
    BNASA,
    BNASB,
    BNASC,
    BNASD,
    BNASE,
    BNASF,
    BNASFM,
    BNASG,
    BNASH,
    BNASXNOR,
    get,
    list_models,
)
from bnas_tf.zoo.preprocessing import decode_predictions, preprocess_input

__all__ = [
    "BNASA",
    "BNASB",
    "BNASC",
    "BNASD",
    "BNASE",
    "BNASF",
    "BNASG",
    "BNASH",
    "BNASXNOR",
    "BNASFM",
    "get",
    "list_models",
    "model_card",
    "preprocess_input",
    "decode_predictions",
    "registry",
]
