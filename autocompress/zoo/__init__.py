"""Built-in models with their tasks, trained once on first use and cached; all work offline."""

from autocompress.cache import cache_dir
from autocompress.zoo import digits as _digits  # noqa: F401  (registers the digits entries)
from autocompress.zoo import digits_lstm as _digits_lstm  # noqa: F401  (registers digits-lstm)
from autocompress.zoo import effnet as _effnet  # noqa: F401  (registers effnet-fmnist)
from autocompress.zoo import minilm as _minilm  # noqa: F401  (registers minilm)
from autocompress.zoo import mnist1d as _mnist1d  # noqa: F401  (registers mnist1d-cnn)
from autocompress.zoo import sentiment as _sentiment  # noqa: F401  (registers minilm-sentiment)
from autocompress.zoo._registry import ZOO, ZooEntry, load_model, load_task, register

__all__ = ["ZOO", "ZooEntry", "cache_dir", "load_model", "load_task", "register"]
