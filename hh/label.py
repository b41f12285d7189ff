"""Comparisons labelled by people (Bai et al. 2022, §2.2, Fig. 6): a local web page that shows a
conversation and two responses side by side and asks which is better on the paper's 8-point
scale; and the paper's chat mode, in which a person writes each Human turn, two policies answer
it, the person picks, and the conversation goes on from the pick.

  python -m hh.label serve --pairs=runs/online/iter_1/to_label.jsonl \
      --out=runs/online/iter_1/labels.jsonl [--port=8470]
  python -m hh.label chat --a=runs/pipeline/cd --b=runs/pipeline/ppo/policy --out=chats.jsonl
  python -m hh.label tranche --chats=chats.jsonl --out=runs/chats  # hh_rlhf/helpful-online@runs/chats

``serve`` reads the online loop's ``to_label.jsonl`` (id, context, a, b) and appends one line per
judgement to ``--out``, the file the loop reads (hh/online/tranche.py's ``JsonlLabels``):
``{"id", "preferred": <text>, "scale": 1…8, "labeller", "time"}`` or ``{"id", "unsure": true,
"labeller", "time"}``. Scale 1 is "A is much better", 4 "A is barely better", 5 "B is barely
better", 8 "B is much better". Each line is appended whole under a lock; the page asks the server
for the next unjudged pair, so a closed tab or a restarted server goes on where it stopped. Keys:
1–8 for the scale, 0 for "can't tell". A request with an unknown id, a pair already judged or a
malformed body gets an error status and a one-line message, and changes nothing.

``chat`` appends one line per picked turn: the conversation so far, both answers, the pick and
the scale; ``tranche`` turns those lines into hh-rlhf's layout (chosen and rejected transcripts
sharing the context), read as ``hh_rlhf/helpful-online@DIR`` (or ``harmless-…`` with
``--task=harmless``, where the person picks the more harmful answer, as red-teamers did: the
other one is the chosen). Served on localhost with the standard library; the page loads nothing
from elsewhere.
"""
from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import threading
from collections.abc import Callable

from absl import app, flags, logging

from hh import cli

SCALE = ("A is much better", "A is better", "A is slightly better", "A is barely better",
         "B is barely better", "B is slightly better", "B is better", "B is much better")
MAX_BODY = 1 << 20


class BadRequest(Exception):
  """A request that changes nothing: its HTTP status and one line saying why."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def turns(context: str) -> list[dict]:
  """``"\\n\\nHuman: …\\n\\nAssistant: …"`` → [{"speaker": "Human", "text": "…"}, …]."""
  parts = re.split(r"\n\n(Human|Assistant):", context)
  out = [{"speaker": "Human", "text": parts[0].strip()}] if parts[0].strip() else []
  return out + [{"speaker": s, "text": t.strip()} for s, t in zip(parts[1::2], parts[2::2])]


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _judgement(body) -> tuple[str, int | None]:
  """A request body's labeller and scale (None: "can't tell"), or BadRequest."""
  if not isinstance(body, dict):
    raise BadRequest(400, "expected a JSON object")
  who = body.get("labeller")
  if not isinstance(who, str) or not who.strip() or len(who) > 100:
    raise BadRequest(400, "'labeller': a non-empty name of at most 100 characters is required")
  scale, unsure = body.get("scale"), body.get("unsure")
  if unsure is True and scale is None:
    return who.strip(), None
  if unsure is None and isinstance(scale, int) and not isinstance(scale, bool) and \
      1 <= scale <= len(SCALE):
    return who.strip(), scale
  raise BadRequest(400, "expected 'scale' (an integer 1–8) or 'unsure': true, not both")


class Labelling:
  """The pairs of a ``to_label.jsonl`` and the judgements already in ``out``."""

  def __init__(self, pairs_path: str, out_path: str):
    from hh import io
    rows = io.read_jsonl(pairs_path, {"id": str, "context": str, "a": str, "b": str})
    self.pairs: dict[str, dict] = {}
    for r in rows:
      if r["id"] in self.pairs:
        raise ValueError(f"{pairs_path}: pair id {r['id']!r} appears twice")
      self.pairs[r["id"]] = r
    self.out, self.lock = out_path, threading.Lock()
    io.makedirs(os.path.dirname(out_path) or ".")
    self.judged: dict[str, dict] = {}
    if io.exists(out_path):
      for n, row in enumerate(io.read_jsonl(out_path, {"id": str}), 1):
        if row["id"] not in self.pairs:
          raise ValueError(f"{out_path}: judgement {n} is of pair {row['id']!r}, which is not "
                           f"in {pairs_path}")
        self.judged[row["id"]] = row

  def progress(self) -> dict:
    return {"judged": len(self.judged), "total": len(self.pairs)}

  def next(self) -> dict:
    """The first pair without a judgement (None when all are judged) and the progress."""
    pid = next((p for p in self.pairs if p not in self.judged), None)
    pair = None if pid is None else {"id": pid, "turns": turns(self.pairs[pid]["context"]),
                                     "a": self.pairs[pid]["a"], "b": self.pairs[pid]["b"]}
    return {"pair": pair, "progress": self.progress()}

  def judge(self, body) -> dict:
    """Appends one judgement line to ``out`` → the progress; BadRequest changes nothing."""
    from hh import io
    who, scale = _judgement(body)
    pid = body.get("id")
    if not isinstance(pid, str) or pid not in self.pairs:
      raise BadRequest(404, f"unknown pair id {pid!r}")
    p = self.pairs[pid]
    row = {"id": pid} | ({"unsure": True} if scale is None else
                         {"preferred": p["a"] if scale <= 4 else p["b"], "scale": scale})
    row |= {"labeller": who, "time": _now()}
    with self.lock:
      if pid in self.judged:
        raise BadRequest(409, f"pair {pid!r} is already judged (by "
                         f"{self.judged[pid].get('labeller', '?')})")
      io.append_text(self.out, json.dumps(row) + "\n")
      self.judged[pid] = row
    return self.progress()


class Chat:
  """Conversations in which a person writes each Human turn and picks between two answers.

  ``respond(context) -> (a, b)``: the two policies' answers to the conversation so far (it ends
  with the person's turn)."""

  def __init__(self, respond: Callable[[str], tuple[str, str]], out_path: str):
    self.respond, self.out, self.lock = respond, out_path, threading.Lock()
    self.conversations: dict[str, dict] = {}

  def start(self) -> dict:
    with self.lock:
      cid = f"chat-{_now()}-{len(self.conversations)}"
      self.conversations[cid] = {"context": "", "pending": None, "turn": 0}
    return {"conversation": cid}

  def _get(self, body) -> dict:
    cid = body.get("conversation") if isinstance(body, dict) else None
    if cid not in self.conversations:
      raise BadRequest(404, f"unknown conversation {cid!r}")
    return self.conversations[cid]

  def say(self, body) -> dict:
    """The person's turn → both answers."""
    c = self._get(body)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
      raise BadRequest(400, "'text': the Human turn is required")
    if c["pending"] is not None:
      raise BadRequest(409, "pick one of the two answers before the next turn")
    context = c["context"] + "\n\nHuman: " + text.strip()
    a, b = self.respond(context)
    c["pending"] = {"context": context, "a": a, "b": b}
    return {"a": a, "b": b}

  def pick(self, body) -> dict:
    """The person's pick → one line in ``out``; the conversation goes on from the pick."""
    from hh import io
    c = self._get(body)
    who, scale = _judgement(body)
    with self.lock:
      p = c["pending"]
      if p is None:
        raise BadRequest(409, "no answers to pick from: write the Human turn first")
      picked = p["a"] if scale is None or scale <= 4 else p["b"]
      row = {"conversation": body["conversation"], "turn": c["turn"], "context": p["context"],
             "a": p["a"], "b": p["b"]}
      row |= {"unsure": True} if scale is None else {"preferred": picked, "scale": scale}
      io.append_text(self.out, json.dumps(row | {"labeller": who, "time": _now()}) + "\n")
      c.update(context=p["context"] + "\n\nAssistant: " + picked, pending=None,
               turn=c["turn"] + 1)
    return {"turns": turns(c["context"])}


def chat_tranche(chats_path: str, out_dir: str, task: str = "helpful",
                 kind: str = "online") -> dict:
  """``chat``'s lines → an hh-rlhf tranche in ``out_dir`` (hh/online/tranche.py's layout); for
  the red-team task the picked (more harmful) answer is the rejected one."""
  import numpy as np

  from hh import io
  from hh.online import tranche
  if task not in ("helpful", "harmless"):
    raise ValueError(f"--task={task!r}; allowed: helpful, harmless")
  rows = io.read_jsonl(chats_path, {"conversation": str, "context": str, "a": str, "b": str})
  pairs = [tranche.Pair(f"{r['conversation']}-{r.get('turn', k)}", r["context"],
                        "harmful" if task == "harmless" else "chat", r["a"], r["b"])
           for k, r in enumerate(rows)]
  picked_a = np.array([r.get("preferred") == r["a"] for r in rows], bool)
  kept = np.array(["preferred" in r for r in rows], bool)
  labels = tranche.Labels(picked_a if task == "helpful" else ~picked_a, kept)
  return tranche.write(out_dir, kind, "train", pairs, labels)


def make_server(app_: Labelling | Chat, host: str = "127.0.0.1", port: int = 0
                ) -> http.server.ThreadingHTTPServer:
  """An HTTP server for ``app_`` (``port`` 0: a free one, ``server.server_address[1]``)."""
  mode = "chat" if isinstance(app_, Chat) else "pairs"
  page = PAGE.replace("__MODE__", mode).replace("__SCALE__", json.dumps(SCALE)).encode()

  class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the page is the interface
      pass

    def _send(self, status: int, body: bytes, kind: str = "application/json"):
      self.send_response(status)
      self.send_header("Content-Type", kind)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def _json(self, status: int, obj):
      self._send(status, json.dumps(obj).encode())

    def do_GET(self):  # noqa: N802  (http.server's name)
      if self.path in ("/", "/index.html"):
        self._send(200, page, "text/html; charset=utf-8")
      elif self.path == "/api/next" and mode == "pairs":
        self._json(200, app_.next())
      else:
        self._json(404, {"error": f"no such page: {self.path}"})

    def do_POST(self):  # noqa: N802
      routes = ({"/api/judge": app_.judge} if mode == "pairs" else
                {"/api/start": lambda body: app_.start(), "/api/say": app_.say,
                 "/api/pick": app_.pick})
      try:
        if self.path not in routes:
          raise BadRequest(404, f"no such endpoint: {self.path}")
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY:
          raise BadRequest(413, f"a body of {size} bytes; at most {MAX_BODY}")
        try:
          body = json.loads(self.rfile.read(size) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
          raise BadRequest(400, "the body is not JSON") from None
        self._json(200, routes[self.path](body))
      except BadRequest as e:
        self._json(e.status, {"error": str(e)})

  return http.server.ThreadingHTTPServer((host, port), Handler)


def policy_responder(a_dir: str, b_dir: str, max_new_tokens: int, temperature: float,
                     seed: int = 0) -> Callable[[str], tuple[str, str]]:
  """Two exported policies (LM workdirs) → ``respond(context) -> (a, b)``, one sample each."""
  import itertools

  import ml_collections

  from hh.policy import policy as policy_lib
  pols = [policy_lib.load(a_dir, "a"), None]
  pols[1] = policy_lib.load(b_dir, "b", mesh=pols[0].mesh)
  cfg = ml_collections.ConfigDict(dict(max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_k=0, top_p=1.0))
  sampling = [policy_lib.sampling_config(p, cfg) for p in pols]
  counter = itertools.count()

  def respond(context: str) -> tuple[str, str]:
    k = next(counter)
    return tuple(policy_lib.generate(p, [context], 1, s, seed + 2 * k + j, 1,
                                     (64, 128, 256, 512, 1024, 2048)).texts[0]
                 for j, (p, s) in enumerate(zip(pols, sampling)))
  return respond


COMMANDS = ("serve", "chat", "tranche")


def main(argv):
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  with cli.user_errors("hh.label"):
    if len(argv) != 2 or argv[1] not in COMMANDS:
      raise ValueError(f"expected one command, {', '.join(COMMANDS)} (got {argv[1:]})")
    if not f.out:
      raise ValueError("--out is required: the judgements' JSONL file (serve, chat) or the "
                       "tranche's folder (tranche)")
    if argv[1] == "tranche":
      if not f.chats:
        raise ValueError("--chats: the JSONL file that hh.label chat wrote is required")
      print(json.dumps(chat_tranche(f.chats, f.out, f.task)))
      return
    if argv[1] == "serve":
      if not f.pairs:
        raise ValueError("--pairs: a to_label.jsonl (id, context, a, b per line) is required")
      labelling = Labelling(f.pairs, f.out)
      server = make_server(labelling, f.host, f.port)
      done = labelling.progress()
      what = f"{done['judged']} of {done['total']} pairs judged"
    else:
      if not (f.a and f.b):
        raise ValueError("--a and --b: the two policies' workdirs are required")
      server = make_server(Chat(policy_responder(f.a, f.b, f.max_new_tokens, f.temperature),
                                f.out), f.host, f.port)
      what = "chat"
    print(f"hh.label: {what}; open http://{f.host}:{server.server_address[1]}/ "
          f"(judgements go to {f.out}; Ctrl-C stops)", flush=True)
    try:
      server.serve_forever()
    except KeyboardInterrupt:
      pass


def define_flags():
  flags.DEFINE_string("pairs", None, "serve: the pairs to judge (an online iteration's "
                      "to_label.jsonl).")
  flags.DEFINE_string("out", None, "Where judgements are appended (serve, chat), or the "
                      "tranche's folder (tranche).")
  flags.DEFINE_string("host", "127.0.0.1", "The address to serve on.")
  flags.DEFINE_integer("port", 8470, "The port to serve on (0: any free one).")
  flags.DEFINE_string("a", None, "chat: policy A's workdir (an LM or exported policy).")
  flags.DEFINE_string("b", None, "chat: policy B's workdir.")
  flags.DEFINE_integer("max_new_tokens", 64, "chat: the answers' length cap in tokens.")
  flags.DEFINE_float("temperature", 1.0, "chat: the sampling temperature.")
  flags.DEFINE_string("chats", None, "tranche: the JSONL file that chat wrote.")
  flags.DEFINE_string("task", "helpful", "tranche: helpful, or harmless (red-team chats: the "
                      "picked answer is the more harmful one).")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hh: which response is better?</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em; background: #263238;
         color: #fff; }
header input { font: inherit; padding: .2em .4em; }
#progress { margin-left: auto; }
main { max-width: 1100px; margin: 1em auto; padding: 0 1em; }
.turn { margin: .3em 0; padding: .5em .8em; border-radius: 6px; white-space: pre-wrap; }
.Human { background: #e3f2fd; } .Assistant { background: #fff; border: 1px solid #ddd; }
.who { font-weight: 600; margin-right: .4em; }
#responses { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; margin: 1em 0; }
.response { background: #fff; border: 2px solid #90a4ae; border-radius: 6px; padding: .8em;
            white-space: pre-wrap; min-height: 3em; }
.response h3 { margin: 0 0 .4em; font-size: 1em; color: #455a64; }
#scale { display: flex; gap: .3em; flex-wrap: wrap; }
#scale button { flex: 1; font: inherit; font-size: 13px; padding: .6em .2em; cursor: pointer;
                border: 1px solid #90a4ae; background: #fff; border-radius: 4px; }
#scale button:hover { background: #e0f2f1; }
#scale button kbd { display: block; color: #78909c; }
#message { margin: .8em 0; min-height: 1.4em; color: #b71c1c; }
#say { display: none; gap: .5em; margin: 1em 0; } #say textarea { flex: 1; font: inherit; }
</style></head>
<body>
<header><strong>hh</strong>
<label>Labeller <input id="labeller" size="14" placeholder="your name"></label>
<button id="new" style="display:none">New conversation</button>
<span id="progress"></span></header>
<main>
<div id="conversation"></div>
<div id="say"><textarea id="text" rows="2" placeholder="Write the Human turn"></textarea>
<button id="send">Send</button></div>
<div id="responses"><div class="response"><h3>A</h3><div id="a"></div></div>
<div class="response"><h3>B</h3><div id="b"></div></div></div>
<div id="scale"></div>
<div id="message"></div>
</main>
<script>
const MODE = "__MODE__", SCALE = __SCALE__;
let current = null, conversation = null, chatTurns = [], busy = false;
const $ = (id) => document.getElementById(id);
const who = $("labeller");
who.value = localStorage.getItem("hh-labeller") || "";
who.addEventListener("change", () => localStorage.setItem("hh-labeller", who.value.trim()));

async function call(method, path, body) {
  const r = await fetch(path, {method, headers: {"Content-Type": "application/json"},
                               body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function showTurns(turns) {
  const box = $("conversation");
  box.replaceChildren();
  for (const t of turns) {
    const div = document.createElement("div");
    div.className = "turn " + t.speaker;
    const name = document.createElement("span");
    name.className = "who"; name.textContent = t.speaker + ":";
    div.append(name, document.createTextNode(t.text));
    box.append(div);
  }
}
function showAnswers(a, b) {
  $("a").textContent = a; $("b").textContent = b;
  $("responses").style.visibility = $("scale").style.visibility = a === null ? "hidden" : "visible";
}
async function loadNext() {
  const data = await call("GET", "/api/next");
  const p = data.progress;
  $("progress").textContent = p.judged + " / " + p.total + " judged";
  current = data.pair;
  if (!current) { showTurns([]); showAnswers(null, null); $("message").textContent =
    "Every pair is judged. Thank you!"; return; }
  showTurns(current.turns); showAnswers(current.a, current.b);
}
async function judge(scale) {
  if (busy) return;
  const labeller = who.value.trim();
  if (!labeller) { $("message").textContent = "Enter your name first."; who.focus(); return; }
  localStorage.setItem("hh-labeller", labeller);
  const body = scale === 0 ? {unsure: true, labeller} : {scale, labeller};
  busy = true;
  try {
    if (MODE === "pairs") {
      if (!current) return;
      await call("POST", "/api/judge", Object.assign({id: current.id}, body));
      $("message").textContent = "";
      await loadNext();
    } else {
      const data = await call("POST", "/api/pick", Object.assign({conversation}, body));
      chatTurns = data.turns;
      showTurns(chatTurns); showAnswers(null, null); $("message").textContent = "";
      $("text").focus();
    }
  } catch (e) { $("message").textContent = e.message; }
  finally { busy = false; }
}
async function startChat() {
  conversation = (await call("POST", "/api/start", {})).conversation;
  chatTurns = [];
  showTurns(chatTurns); showAnswers(null, null);
  $("progress").textContent = "chat";
}
async function say() {
  const text = $("text").value.trim();
  if (!text || busy) return;
  busy = true;
  try {
    const data = await call("POST", "/api/say", {conversation, text});
    showTurns(chatTurns.concat([{speaker: "Human", text}]));
    showAnswers(data.a, data.b); $("text").value = ""; $("message").textContent = "";
  } catch (e) { $("message").textContent = e.message; }
  finally { busy = false; }
}
SCALE.forEach((label, i) => {
  const b = document.createElement("button");
  b.dataset.scale = i + 1;
  b.innerHTML = label + "<kbd>" + (i + 1) + "</kbd>";
  b.addEventListener("click", () => judge(i + 1));
  $("scale").append(b);
});
const unsure = document.createElement("button");
unsure.dataset.scale = 0;
unsure.innerHTML = "Can't tell<kbd>0</kbd>";
unsure.addEventListener("click", () => judge(0));
$("scale").append(unsure);
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") {
    if (e.target.id === "text" && e.key === "Enter" && !e.shiftKey) { e.preventDefault(); say(); }
    return;
  }
  if (/^[0-8]$/.test(e.key)) judge(Number(e.key));
});
if (MODE === "pairs") { loadNext(); }
else {
  $("say").style.display = "flex"; $("new").style.display = "inline";
  $("new").addEventListener("click", startChat); $("send").addEventListener("click", say);
  startChat();
}
</script>
</body></html>
"""


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.label"))
