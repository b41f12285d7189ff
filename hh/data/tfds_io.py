"""Build TFDS datasets as array_record and read them back as data sources — TensorFlow-free.

``build`` prepares a dataset once under ``data_dir`` (reusing it when complete). TFDS writes into
an ``incomplete.*`` folder and renames it only when every split is written; if a build fails,
``build`` also removes that folder, so a failed build leaves nothing behind and the next attempt
starts clean.
"""
from __future__ import annotations

import contextlib
import io as std_io
import logging
import os

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from hh import io

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

  def make():
    return _prepare(cls(config=config, data_dir=data_dir, file_format=FILE_FORMAT,
                        **builder_kwargs))
  if jax.process_count() == 1:
    return make()
  # Several processes: process 0 builds first; the others then find a shared folder complete
  # (TFDS reuses it) or build their own host-local copy (the same one: builds are deterministic).
  # A failed build still meets the others at the barrier (they then fail the same way).
  builder, error = None, None
  if jax.process_index() == 0:
    try:
      builder = make()
    except Exception as e:  # noqa: BLE001 — re-raised below, after the barrier
      error = e
  multihost_utils.sync_global_devices(f"hh: {dataset} built in {data_dir}")
  if error is not None:
    raise error
  return builder or make()


def _prepare(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  try:
    with contextlib.redirect_stdout(std_io.StringIO()) as chatter:  # TFDS prints its progress
      builder.download_and_prepare()
    logging.info("%s", chatter.getvalue().strip())
  except BaseException:
    parent = os.path.dirname(os.fspath(builder.data_dir))
    for name in io.listdir(parent) if io.isdir(parent) else ():
      if name.startswith("incomplete"):
        io.rmtree(os.path.join(parent, name))
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
