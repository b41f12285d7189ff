"""Flag parsing shared by the entry points: every user error ends as one line on stderr."""
from __future__ import annotations

import contextlib
import os
import re
import sys

from absl import flags


def _one_line(err: BaseException) -> str:
  """The message of ``err`` on one line; for an embedded traceback, its final line."""
  text = str(err.args[0] if len(err.args) == 1 else err).replace("\\n", "\n")
  if "Traceback" in text:  # keep the final exception's message, which may span lines
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception): ", line)]
    text = " ".join(lines[starts[-1]:] if starts else lines[-1:])
  text = text.replace("\\'", "'").replace("\n", " ").strip()
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # a KeyError's repr
    text = text[1:-1]
  return re.sub(r"\s+", " ", text)


# What a user's bad input raises: config files, locked overrides, meshes, paths.
USER_ERRORS = (flags.Error, ValueError, KeyError, AttributeError, OSError, FloatingPointError)


@contextlib.contextmanager
def user_errors(prog: str):
  """Turns a user-input error into one ``prog: error: ...`` line (``HH_TRACEBACK=1``: full)."""
  try:
    yield
  except USER_ERRORS as e:
    if os.environ.get("HH_TRACEBACK"):
      raise
    kind = ("" if isinstance(e, (ValueError, FileNotFoundError, FloatingPointError))
            else f"{type(e).__name__}: ")
    hint = "" if not kind else " (HH_TRACEBACK=1 shows where)"
    sys.exit(f"{prog}: error: {kind}{_one_line(e)}{hint}")


def parse_flags(argv: list[str], prog: str = "hh") -> list[str]:
  """``absl.app.run``'s ``flags_parser``: parses ``argv`` or exits with one clear line.

  Config files raise their own ValueErrors (unknown size, unknown argument); locked configs raise
  AttributeError/KeyError for an unknown override key, which is named with its flag.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cause = e.__cause__ or e.__context__
    detail = _one_line(cause) if cause is not None else _one_line(e)
    if "Traceback" in str(e):
      detail = _one_line(e)
    named = re.match(r"flag (--\S+?): ", str(e)) or re.search(r"flag '(\S+)'", str(e))
    flag = (named.group(1) if named else "").lstrip("-")
    given = next((a for a in argv[1:] if flag and a.lstrip("-").startswith(flag)), "")
    sys.exit(f"{prog}: error: {given + ': ' if given else ''}{detail}")
  except (AttributeError, KeyError) as e:
    msg = _one_line(e)
    quoted = re.search(r"'([^'\"]+)'", msg)     # ml_collections names the missing field quoted
    key = quoted.group(1) if quoted else msg.split("'")[0].strip()
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    # the flag with the missing field on its path (an unknown inner key, e.g. config.data.x)
    where = next((b for b in bad if key in b.split(".")[1:]), ", ".join(bad))
    hint = msg[msg.find(key) + len(key):].strip("'\" ") if quoted else msg[len(key):].strip("' ")
    sys.exit(f"{prog}: error: unknown config key {where}" + (f" ({hint})" if hint else ""))
  except ValueError as e:
    sys.exit(f"{prog}: error: {_one_line(e)}")
