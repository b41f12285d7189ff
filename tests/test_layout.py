"""The shape of the code: no import cycles in hh/, one orchestration layer that nothing below
imports, figure scripts that share only experiments/common.py, every experiment answering
``--help`` without work, and a repository that refers to nothing outside itself."""
import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _modules(package: str) -> dict[str, str]:
  out = {}
  for folder, _, files in os.walk(os.path.join(REPO, package)):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        out[name.removesuffix(".__init__")] = path
  return out


def import_graph(package: str) -> dict[str, set[str]]:
  """Module → the modules of ``package`` it imports, at module level or inside functions."""
  mods = _modules(package)
  graph = {m: set() for m in mods}
  for m, path in mods.items():
    is_pkg = path.endswith("__init__.py")
    here = m if is_pkg else m.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = here.split(".")[:len(here.split(".")) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
      else:
        continue
      graph[m] |= {n for n in names if n in mods and n != m}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))
  for v in graph:
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_finds_a_cycle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_hh_has_no_import_cycle_between_modules_or_packages():
  graph = import_graph("hh")
  assert cycles(graph) == []
  top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731  hh.<package or module>
  packages = {}
  for m, deps in graph.items():
    packages.setdefault(top(m), set()).update(top(d) for d in deps if top(d) != top(m))
  assert cycles(packages) == []


def test_nothing_below_the_runner_imports_it():
  graph = import_graph("hh")
  runner = {"hh.pipeline", "hh.main"}
  users = {m for m, deps in graph.items() if deps & runner and m not in runner}
  assert users == set()


# The calls that would bypass hh's path layer (hh/io.py) and so fail on a gs:// workdir; each
# allowed exception names why.
_FS_CALLS = re.compile(r"(?<![\w.])(?<!def )open\(|\bos\.(path\.(exists|isdir|isfile|abspath|getsize)|"
                       r"makedirs|replace|rename|remove|listdir|walk|scandir|rmdir)\(|"
                       r"\bshutil\.|\bglob\.|\bfcntl\.")
_FS_ALLOWED = {"hh/io.py": "the layer itself",
               "hh/multihost.py": "the host's own /dev/accel* devices",
               "hh/online/loop.py": "os.path.abspath(__file__): the package's own files",
               "hh/convert.py": "os.path.abspath(__file__): the package's own files"}


def test_every_file_access_in_hh_goes_through_the_path_layer():
  found = []
  for m, path in _modules("hh").items():
    rel = os.path.relpath(path, REPO)
    if rel in _FS_ALLOWED:
      continue
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
      if _FS_CALLS.search(line.split("#")[0]):
        found.append(f"{rel}:{n}: {line.strip()}")
  assert not found, "use hh.io instead:\n" + "\n".join(found)


def test_figure_scripts_import_only_common_and_hh():
  graph = import_graph("experiments")
  for m, deps in graph.items():
    assert deps <= {"experiments.common", "experiments"}, (m, deps)


def test_every_experiment_answers_help_without_writing(tmp_path):
  scripts = sorted(m.split(".")[-1] for m in _modules("experiments")
                   if m.count(".") == 1 and not m.endswith(("common", "experiments")))
  assert len(scripts) >= 10
  env = dict(os.environ, HH_EXPERIMENTS=str(tmp_path / "runs"), JAX_PLATFORMS="cpu")
  procs = {s: subprocess.Popen([sys.executable, "-m", f"experiments.{s}", "--help"], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for s in scripts}
  for s, p in procs.items():
    out, _ = p.communicate(timeout=120)
    assert p.returncode in (0, 1) and "--help" in out and "Traceback" not in out, (s, out[-2000:])
  assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module", ["hh.main", "hh.report", "hh.lineage", "hh.plan", "hh.ood"])
def test_entry_points_answer_help(module, tmp_path):
  proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                        text=True, timeout=120)
  out = proc.stdout + proc.stderr
  assert proc.returncode in (0, 1) and "--help" in out and "Traceback" not in out, out[-2000:]
  assert list(tmp_path.iterdir()) == []


def test_a_run_refused_on_bad_input_leaves_no_trace_in_the_workdir_it_made(tmp_path):
  """PPO pointed at a π0 that does not exist: one line, and no config.json, identity record or
  lock left in the new workdir; an existing workdir keeps what it had."""
  from configs import ppo
  from hh import main as hh_main
  config = ppo.get_config("size=tiny")
  config.ppo.init_from = str(tmp_path / "no_such_pi0")
  config.ppo.pm = str(tmp_path / "no_such_pm")
  with pytest.raises((ValueError, FileNotFoundError), match="no_such"):
    hh_main.run(config, str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "notes.txt").write_text("mine")
  with pytest.raises((ValueError, FileNotFoundError), match="no_such"):
    hh_main.run(config, str(tmp_path / "old"))
  assert (tmp_path / "old" / "notes.txt").read_text() == "mine"


# What a user of hh does not have: the notes the code was built from and how it was organised.
FORBIDDEN = [r"SPEC §", r"STYLE §", r"\.\./shared", r"[Ii]ssue #?\d+", r"\bpeers?\b"]


def test_the_repository_refers_to_nothing_outside_it():
  files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  found = []
  for f in files:
    if f.endswith((".png", ".gz", ".model")) or f == "tests/test_layout.py":
      continue
    path = os.path.join(REPO, f)
    if not os.path.isfile(path):
      continue
    text = open(path, encoding="utf-8", errors="replace").read()
    for pattern in FORBIDDEN:
      for match in re.finditer(pattern, text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(f"{f}:{line}: {match.group(0)}")
  assert not found, "\n".join(found[:40]) + f"\n… {len(found)} in all"


@pytest.mark.parametrize("path", ["README.md"])
def test_the_readme_is_a_front_door(path):
  lines = open(os.path.join(REPO, path), encoding="utf-8").read().splitlines()
  assert len(lines) <= 350, len(lines)
