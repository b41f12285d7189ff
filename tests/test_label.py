"""The labelling page (hh/label.py) in headless Chromium: pairs judged with clicks and keys, a
reload that resumes, the chat mode; the judgement file against what was clicked, read back by the
online loop's label source; bad requests answered with an error that changes nothing."""
import gzip
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from hh import label
from hh.online import tranche

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PAIRS = [{"id": "1-0", "context": "\n\nHuman: What is the capital of Elbonia?",
          "a": "It is Mudville.", "b": "I don't know."},
         {"id": "1-1", "context": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.",
          "a": "No.", "b": "Why did the chicken cross the road?"},
         {"id": "1-2", "context": "\n\nHuman: How do I pick a lock?",
          "a": "I can't help with that.", "b": "Use a tension wrench."},
         {"id": "1-3", "context": "\n\nHuman: 2 + 2?", "a": "5", "b": "4"}]


@pytest.fixture
def served(tmp_path):
  """A ``serve`` server on a free port over PAIRS → (url, labels path, stop)."""
  pairs = tmp_path / "to_label.jsonl"
  pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  out = tmp_path / "labels.jsonl"
  servers = []

  def start():
    server = label.make_server(label.Labelling(str(pairs), str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}"
  yield start, out
  for s in servers:
    s.shutdown()
    s.server_close()


@pytest.fixture
def browser():
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver; the README's test command installs them where apt-get runs)")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1200,800"):
    opts.add_argument(a)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
  yield driver
  driver.quit()


def _wait(driver, css, text):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  WebDriverWait(driver, 10).until(
      lambda d: text in d.find_element(By.CSS_SELECTOR, css).text,
      f"{css} never showed {text!r}")


def _press(driver, key):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  driver.find_element(By.TAG_NAME, "body").click()
  ActionChains(driver).send_keys(key).perform()


def test_a_person_labels_pairs_with_clicks_and_keys_and_a_reload_resumes(served, browser,
                                                                         tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  start, out = served
  url = start()
  browser.get(url)
  _wait(browser, "#a", PAIRS[0]["a"])
  assert "Tell me" not in browser.find_element(By.ID, "conversation").text
  browser.find_element(By.ID, "labeller").send_keys("ana", Keys.TAB)
  browser.find_element(By.CSS_SELECTOR, '#scale button[data-scale="1"]').click()  # A much better
  _wait(browser, "#progress", "1 / 4 judged")
  _wait(browser, "#conversation", "Tell me a joke.")  # the second pair, all three turns
  assert browser.find_element(By.ID, "conversation").text.count("Human:") == 2
  _press(browser, "8")                                                  # B much better
  _wait(browser, "#progress", "2 / 4 judged")
  _press(browser, "0")                                                  # can't tell
  _wait(browser, "#progress", "3 / 4 judged")
  browser.refresh()  # a closed tab: the page resumes at the first unjudged pair
  _wait(browser, "#progress", "3 / 4 judged")
  _wait(browser, "#b", PAIRS[3]["b"])
  assert browser.find_element(By.ID, "labeller").get_attribute("value") == "ana"
  shot = os.environ.get("HH_LABEL_SCREENSHOT") or str(tmp_path / "page.png")
  browser.save_screenshot(shot)
  assert open(shot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  browser.find_element(By.CSS_SELECTOR, '#scale button[data-scale="5"]').click()  # B barely
  _wait(browser, "#progress", "4 / 4 judged")
  _wait(browser, "#message", "Every pair is judged")
  rows = [json.loads(x) for x in out.read_text().splitlines()]
  assert [(r["id"], r.get("scale"), r.get("preferred"), r.get("unsure")) for r in rows] == [
      ("1-0", 1, PAIRS[0]["a"], None), ("1-1", 8, PAIRS[1]["b"], None),
      ("1-2", None, None, True), ("1-3", 5, PAIRS[3]["b"], None)]
  assert {r["labeller"] for r in rows} == {"ana"} and all(r["time"] for r in rows)
  # what the online loop reads
  pairs = [tranche.Pair(p["id"], p["context"], "x", p["a"], p["b"]) for p in PAIRS]
  got = tranche.JsonlLabels(str(out)).label(pairs)
  np.testing.assert_array_equal(got.kept, [True, True, False, True])
  np.testing.assert_array_equal(got.a_preferred[got.kept], [True, False, False])


def _post(url, body: bytes):
  req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=10) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@pytest.mark.parametrize("body,status,message", [
    ({"id": "9-9", "scale": 2, "labeller": "bo"}, 404, "unknown pair id '9-9'"),
    ({"id": "1-0", "scale": 3, "labeller": "bo"}, 409, "pair '1-0' is already judged (by ana)"),
    (b'{"id": "1-1", "scale":', 400, "the body is not JSON"),
    ({"id": "1-1", "scale": 9, "labeller": "bo"}, 400, "expected 'scale' (an integer 1–8)"),
    ({"id": "1-1", "scale": 2, "unsure": True, "labeller": "bo"}, 400, "not both"),
    ({"id": "1-1", "scale": 2}, 400, "'labeller': a non-empty name"),
    (["1-1"], 400, "expected a JSON object"),
])
def test_bad_requests_get_an_error_and_change_nothing(served, body, status, message):
  start, out = served
  url = start()
  assert _post(url + "/api/judge", json.dumps({"id": "1-0", "scale": 4, "labeller": "ana"})
               .encode()) == (200, {"judged": 1, "total": 4})
  before = out.read_bytes()
  code, reply = _post(url + "/api/judge", body if isinstance(body, bytes) else
                      json.dumps(body).encode())
  assert code == status and message in reply["error"] and "\n" not in reply["error"]
  assert out.read_bytes() == before
  with urllib.request.urlopen(url + "/api/next", timeout=10) as r:
    assert json.loads(r.read())["pair"]["id"] == "1-1"  # the server's state is unchanged too


def test_a_restarted_server_goes_on_and_a_judgement_file_of_other_pairs_is_refused(served,
                                                                                    tmp_path):
  start, out = served
  url = start()
  _post(url + "/api/judge", json.dumps({"id": "1-0", "unsure": True, "labeller": "x"}).encode())
  with urllib.request.urlopen(start() + "/api/next", timeout=10) as r:  # a second server
    assert json.loads(r.read())["progress"] == {"judged": 1, "total": 4}
  other = tmp_path / "other.jsonl"
  other.write_text(json.dumps({"id": "2-0", "context": "", "a": "x", "b": "y"}) + "\n")
  with pytest.raises(ValueError, match=r"labels.jsonl: judgement 1 is of pair '1-0', which is "
                     r"not in .*other.jsonl"):
    label.Labelling(str(other), str(out))
  with pytest.raises(ValueError, match="appears twice"):
    dup = tmp_path / "dup.jsonl"
    dup.write_text((json.dumps(PAIRS[0]) + "\n") * 2)
    label.Labelling(str(dup), str(tmp_path / "x.jsonl"))


def test_chat_mode_goes_on_from_the_pick_and_becomes_an_hh_rlhf_tranche(browser, tmp_path):
  """Two turns typed in the page, each answered by two stub policies, picked with a key and a
  click; the chat lines hold the conversation so far, and ``chat_tranche`` writes them as
  hh-rlhf comparisons whose chosen transcript ends with the pick."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  seen = []

  def respond(context):
    seen.append(context)
    return f"answer A{len(seen)}", f"answer B{len(seen)}"
  out = tmp_path / "chats.jsonl"
  server = label.make_server(label.Chat(respond, str(out)))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    browser.get(f"http://127.0.0.1:{server.server_address[1]}")
    _wait(browser, "#progress", "chat")
    browser.find_element(By.ID, "labeller").send_keys("cy", Keys.TAB)
    browser.find_element(By.ID, "text").send_keys("Hello there", Keys.ENTER)
    _wait(browser, "#b", "answer B1")
    _press(browser, "7")                                    # B is better
    _wait(browser, "#conversation", "answer B1")
    browser.find_element(By.ID, "text").send_keys("And then?", Keys.ENTER)
    _wait(browser, "#a", "answer A2")
    browser.find_element(By.CSS_SELECTOR, '#scale button[data-scale="2"]').click()  # A better
    _wait(browser, "#conversation", "answer A2")
  finally:
    server.shutdown()
    server.server_close()
  assert seen == ["\n\nHuman: Hello there",
                  "\n\nHuman: Hello there\n\nAssistant: answer B1\n\nHuman: And then?"]
  rows = [json.loads(x) for x in out.read_text().splitlines()]
  assert [(r["turn"], r["context"], r["preferred"], r["scale"], r["labeller"]) for r in rows] == [
      (0, seen[0], "answer B1", 7, "cy"), (1, seen[1], "answer A2", 2, "cy")]
  files = label.chat_tranche(str(out), str(tmp_path / "tranche"))
  assert list(files) == ["helpful-online"]
  with gzip.open(tmp_path / "tranche" / "helpful-online" / "train.jsonl.gz", "rt") as f:
    got = [json.loads(x) for x in f]
  assert got == [{"chosen": seen[0] + "\n\nAssistant: answer B1",
                  "rejected": seen[0] + "\n\nAssistant: answer A1"},
                 {"chosen": seen[1] + "\n\nAssistant: answer A2",
                  "rejected": seen[1] + "\n\nAssistant: answer B2"}]
  red = label.chat_tranche(str(out), str(tmp_path / "red"), task="harmless")  # pick = worse
  with gzip.open(tmp_path / "red" / "harmless-online" / "train.jsonl.gz", "rt") as f:
    assert json.loads(f.readline())["chosen"].endswith("answer A1") and list(red) == [
        "harmless-online"]


def test_chat_requests_out_of_turn_are_refused(tmp_path):
  chat = label.Chat(lambda c: ("a", "b"), str(tmp_path / "c.jsonl"))
  cid = chat.start()["conversation"]
  with pytest.raises(label.BadRequest, match="write the Human turn first"):
    chat.pick({"conversation": cid, "scale": 1, "labeller": "x"})
  chat.say({"conversation": cid, "text": "hi"})
  with pytest.raises(label.BadRequest, match="pick one of the two answers"):
    chat.say({"conversation": cid, "text": "again"})
  with pytest.raises(label.BadRequest, match="unknown conversation 'nope'"):
    chat.say({"conversation": "nope", "text": "x"})
  assert not (tmp_path / "c.jsonl").exists()
