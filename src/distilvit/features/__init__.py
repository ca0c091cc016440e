"""The frozen-encoder feature cache: encode each image once, train from the stored features.

* :mod:`~distilvit.features.keys`: what the features depend on (store key) and image content digests;
* :mod:`~distilvit.features.store`: the crash-safe on-disk store (one folder per key);
* :mod:`~distilvit.features.encode`: encode a dataset's missing images into a store;
* :mod:`~distilvit.features.dataset`: the dataset view that training reads, and the on/off decision.

The format and its guarantees are described in ``docs/feature-cache.md``.
"""

from distilvit.features.dataset import CachedFeatureDataset, cached_feature_sets, encoder_is_frozen, use_feature_cache
from distilvit.features.encode import EncodeReport, encode_dataset
from distilvit.features.keys import FEATURE_DTYPES, FeatureKey, feature_key, image_digest
from distilvit.features.store import FeatureStore, list_stores
from distilvit.paths import feature_cache_root

__all__ = [
    "FEATURE_DTYPES",
    "CachedFeatureDataset",
    "EncodeReport",
    "FeatureKey",
    "FeatureStore",
    "cached_feature_sets",
    "encode_dataset",
    "encoder_is_frozen",
    "feature_cache_root",
    "feature_key",
    "image_digest",
    "list_stores",
    "use_feature_cache",
]
