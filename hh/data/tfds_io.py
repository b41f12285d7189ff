"""Build TFDS datasets as array_record and read them back as data sources — TensorFlow-free.

``build`` prepares a dataset once under ``data_dir`` (reusing it when complete). TFDS writes into
an ``incomplete.*`` folder and renames it only when every split is written; if a build fails,
``build`` also removes that folder, so a failed build leaves nothing behind and the next attempt
starts clean.
"""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import shutil

import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"
tfds.disable_progress_bar()


def _builder_cls(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
  """'hh_rlhf' / 'pmp' → the builder class (importing registers it with TFDS)."""
  if name == "hh_rlhf":
    from hh.data.hh_rlhf import HhRlhf
    return HhRlhf
  if name == "pmp":
    from hh.data.pmp import Pmp
    return Pmp
  raise ValueError(f"unknown dataset {name!r}; allowed: hh_rlhf, pmp (the world's hh_sim is "
                   "built by hh/sim/stage.py)")


def build(dataset: str, data_dir: str, builder_cls: type | None = None,
          **builder_kwargs) -> tfds.core.DatasetBuilder:
  """Prepares ``"name/config"`` under ``data_dir`` (once) and returns its builder.
  ``builder_cls``: a builder defined above this package (the world's ``HhSim``); default: the
  hh-rlhf or PMP builder the name says."""
  name, _, config = dataset.partition("/")
  cls = builder_cls or _builder_cls(name)
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in configs:
    raise ValueError(f"unknown config {dataset!r}; allowed: "
                     f"{', '.join(f'{name}/{c}' for c in configs)}")
  builder = cls(config=config, data_dir=data_dir, file_format=FILE_FORMAT, **builder_kwargs)
  try:
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # TFDS prints its progress
      builder.download_and_prepare()
    logging.info("%s", chatter.getvalue().strip())
  except BaseException:
    for partial in glob.glob(os.path.join(os.path.dirname(builder.data_dir), "incomplete*")):
      shutil.rmtree(partial, ignore_errors=True)
    raise
  return builder


def source(builder: tfds.core.DatasetBuilder, split: str):
  """A random-access ``ArrayRecordDataSource`` for one split (``len`` and ``[i]``)."""
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {builder.info.full_name}; "
                     f"available: {', '.join(builder.info.splits)}")
  return builder.as_data_source(split=split)


def text(value) -> str:
  """TFDS returns Text features as bytes: decode to str."""
  return value.decode("utf-8") if isinstance(value, bytes) else value
