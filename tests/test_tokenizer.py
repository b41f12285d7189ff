"""Tokenizer: exact round trip, reserved ids, atomic turn markers, an EOC no text can produce."""
import numpy as np
import pytest

from hh import tokenizer


def test_round_trip_any_text(wikitext_tokenizer):
  texts = ["\n\nHuman: What's 2+2?  \n\nAssistant: It is 4.\tÜñï 😀 <|eoc|>\n",
           " = Valkyria Chronicles III = \n", "", "a\n\n\nb   c"]
  for t in texts:
    assert wikitext_tokenizer.decode(wikitext_tokenizer.encode(t)) == t


def test_reserved_ids_and_markers(wikitext_tokenizer):
  tok = wikitext_tokenizer
  assert tok.sp.pad_id() == tokenizer.PAD_ID == 0 and tok.eoc_id == 4
  ids = tok.encode("\n\nHuman: hi\n\nAssistant: hello")
  assert ids[0] == tok.human_id and tok.assistant_id in ids
  assert tok.eoc_id not in tok.encode("<|eoc|>")  # a control symbol: never produced by text
  assert tok.decode(ids + [tok.eoc_id, tokenizer.PAD_ID]) == "\n\nHuman: hi\n\nAssistant: hello"
  assert tok.vocab_size == 512


def test_unigram_entropy_by_hand():
  tokens = np.array([0, 0, 1, 2])
  expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
  assert tokenizer.unigram_entropy(tokens, 5) == pytest.approx(expected)


def test_missing_model_path_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.tokenizer.path=.*no such file"):
    tokenizer.Tokenizer.load(str(tmp_path / "nope.model"))
