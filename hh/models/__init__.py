"""Model family: the transformer trunk, its heads and the KV-cache decoding path."""
from hh.models.transformer import (
  DecoderLM,
  KVCache,
  LMHead,
  ModelConfig,
  PreferenceModel,
  ScalarHead,
  Transformer,
  ValueModel,
  attention_mask,
  decode_params,
  grow_cache,
  init_cache,
  param_logical_axes,
  positions_from_mask,
)

__all__ = ["DecoderLM", "KVCache", "LMHead", "ModelConfig", "PreferenceModel", "ScalarHead",
           "Transformer", "ValueModel", "attention_mask", "init_cache", "positions_from_mask",
           "decode_params", "grow_cache", "param_logical_axes"]
