"""PMP builders on small fixture files, with the scores and the binarization by hand."""
import json

import pytest

from hh.data import pmp, tfds_io
from hh.data.hh_rlhf import BadInput


@pytest.mark.parametrize("upvotes,accepted,expected", [
    (0, False, 0), (1, False, 1), (3, False, 2), (10, False, 3), (10, True, 4), (-5, False, -1),
    (-5, True, 0)])
def test_stackexchange_score_by_hand(upvotes, accepted, expected):
  # round(log2(1 + upvotes)) + 1 if accepted − 1 if negative; log2(11) = 3.46 → 3
  assert pmp.stackexchange_score(upvotes, accepted) == expected


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _examples(builder):
  src = tfds_io.source(builder, "train")
  return [{k: tfds_io.text(src[i][k]) for k in ("context_text", "chosen", "rejected")}
          for i in range(len(src))]


def test_stackexchange_pairs_are_binarized(tmp_path):
  path = _jsonl(tmp_path / "se.jsonl", [
      {"question": "How do I sort a list?", "answers": [
          {"text": "Use sorted().", "score": 10, "selected": True},   # 4
          {"text": "Write bubble sort.", "score": 3, "selected": False},  # 2
          {"text": "Call list.sort().", "score": 3, "selected": False}]},  # 2: ties: no pair
      {"question": "Only one answer", "answers": [{"text": "x", "score": 5}]}])
  b = tfds_io.build("pmp/stackexchange", str(tmp_path / "data"), files={"path": path})
  ex = _examples(b)
  assert b.info.metadata["train"] == {"pairs": 2, "examples": 4}
  assert ex[0]["context_text"] == "\n\nHuman: How do I sort a list?"
  # pair 1: "sorted" > "bubble": (A+GOOD > A+BAD), (B+BAD > B+GOOD)
  assert (ex[0]["chosen"], ex[0]["rejected"]) == (" Use sorted(). [GOOD]", " Use sorted(). [BAD]")
  assert (ex[1]["chosen"], ex[1]["rejected"]) == (" Write bubble sort. [BAD]",
                                                  " Write bubble sort. [GOOD]")
  assert ex[3]["chosen"] == " Call list.sort(). [BAD]"


def test_reddit_sibling_pairs_by_karma(tmp_path):
  subs = _jsonl(tmp_path / "s.jsonl", [{"id": "s1", "title": "Best pizza?", "selftext": ""}])
  comments = _jsonl(tmp_path / "c.jsonl", [
      {"id": "c1", "parent_id": "t3_s1", "body": "Margherita.", "score": 10},
      {"id": "c2", "parent_id": "t3_s1", "body": "Pineapple.", "score": 1},
      {"id": "c3", "parent_id": "t3_s1", "body": "Marinara.", "score": 9},  # gap 1 to c1: none
      {"id": "c4", "parent_id": "t3_s1", "body": "[deleted]", "score": 50},
      {"id": "c5", "parent_id": "t1_c1", "body": "Agreed!", "score": 5},
      {"id": "c6", "parent_id": "t1_c1", "body": "Meh.", "score": 1}])
  pairs = [(ctx, good, bad) for _, ctx, good, bad in pmp.reddit_pairs(comments, subs, 2)]
  assert pairs == [("Best pizza?", "Margherita.", "Pineapple."),
                   ("Best pizza?", "Marinara.", "Pineapple."),
                   ("Margherita.", "Agreed!", "Meh.")]
  b = tfds_io.build("pmp/reddit", str(tmp_path / "data"),
                    files={"path": comments, "submissions": subs})
  assert len(tfds_io.source(b, "train")) == 6


WIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>Otter</title>
<revision><id>1</id><comment>start</comment><sha1>aaa</sha1>
<text>Otters are mammals.

They eat fish.</text></revision>
<revision><id>2</id><comment></comment><sha1>bbb</sha1>
<text>Otters are mammals.

OTTERS ARE THE WORST LOL</text></revision>
<revision><id>3</id><comment>Reverted edits by 1.2.3.4 (rvv)</comment><sha1>aaa</sha1>
<text>Otters are mammals.

They eat fish.</text></revision>
<revision><id>4</id><comment>copyedit</comment><sha1>ccc</sha1>
<text>Otters are aquatic mammals.</text></revision>
</page></mediawiki>"""


def test_wikipedia_vandalism_reverts(tmp_path):
  path = tmp_path / "dump.xml"
  path.write_text(WIKI)
  pairs = [p[1:] for p in pmp.wikipedia_pairs(str(path))]
  assert pairs == [('Write a paragraph of the Wikipedia article "Otter".', "They eat fish.",
                    "OTTERS ARE THE WORST LOL")]
  b = tfds_io.build("pmp/wikipedia", str(tmp_path / "data"), files={"path": str(path)})
  ex = _examples(b)
  assert [e["chosen"] for e in ex] == [" They eat fish. [GOOD]", " OTTERS ARE THE WORST LOL [BAD]"]


def test_bad_pmp_input_is_named(tmp_path):
  path = tmp_path / "se.jsonl"
  path.write_text('{"question": "q", "answers": [{"text": "a", "score": 1}]}\n{"question": 3}\n')
  with pytest.raises(BadInput, match=r"se.jsonl:2: missing_key"):
    list(pmp.stackexchange_pairs(str(path), 10))
  with pytest.raises(FileNotFoundError, match="pmp/reddit: source file"):
    tfds_io.build("pmp/reddit", str(tmp_path / "d"), files={"path": str(tmp_path / "nope")})
  (tmp_path / "bad.xml").write_text("<mediawiki><page>")
  with pytest.raises(BadInput, match="not_xml"):
    list(pmp.wikipedia_pairs(str(tmp_path / "bad.xml")))
