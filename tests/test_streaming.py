"""`diffusion_generate(streamer=...)` speaks transformers' streamer protocol: the prompt, then each token once it is
final (the decided prefix), `put_draft` with the undecided rest for streamers that have it, `end()` at the end."""

import threading

import pytest
import torch
from transformers import TextDiffusionStreamer, TextIteratorStreamer

from tests.conftest import make_dlm
from tests.oracle import EOS, MASK, batch, oracle_model


class Recorder:
    """A streamer that keeps every call."""

    def __init__(self, drafts=True):
        self.calls = []
        if drafts:
            self.put_draft = lambda value: self.calls.append(("draft", value.tolist()))

    def put(self, value):
        self.calls.append(("put", value.tolist()))

    def end(self):
        self.calls.append(("end", None))

    def puts(self):
        return [v for kind, v in self.calls if kind == "put"]


def test_streamed_tokens_are_the_answer_in_order_each_once():
    model = oracle_model({10: [11, 12, 13, 14, 15, 16, 17]})
    streamer = Recorder(drafts=False)
    ids, mask = batch([[10, 20]])
    out = model.diffusion_generate(ids, mask, max_new_tokens=16, block_length=4, length_strategy="grow",
                                   threshold=None, streamer=streamer, return_dict_in_generate=True)
    prompt, *answer_puts = streamer.puts()
    assert prompt == [10, 20]
    streamed = [t for chunk in answer_puts for t in chunk]
    assert streamed == [13, 14, 15, 16, 17, EOS]  # the oracle's tokens at positions 2.. (its answer counts from 0)
    assert streamed == out.sequences[0, 2:].tolist()[: len(streamed)]
    assert len(answer_puts) > 1, "one put at the end is not streaming"
    assert streamer.calls[-1] == ("end", None) and sum(kind == "end" for kind, _ in streamer.calls) == 1


def test_a_token_is_put_only_once_every_position_before_it_is_decided():
    """With confidence-ordered unmasking a later position can be committed first; it must wait in the draft."""
    model, tok = make_dlm("llama", seed=3)
    steps = []
    streamer = Recorder()
    ids = tok(["abc"], return_tensors="pt").input_ids
    out = model.diffusion_generate(ids, max_new_tokens=12, block_length=4, length_strategy="fixed", threshold=None,
                                   streamer=streamer, callback=lambda s: steps.append(s.canvas[0, 3:].tolist()),
                                   return_dict_in_generate=True)
    answer = out.sequences[0, 3:].tolist()
    sent = 0
    step = 0
    for kind, value in streamer.calls[1:]:
        if kind == "put":  # a step puts (if anything became final), then shows its draft
            assert value == answer[sent : sent + len(value)]
            # at the step of this put, every position up to the new end was committed
            assert tok.mask_token_id not in steps[step][: sent + len(value)]
            sent += len(value)
        elif kind == "draft":
            assert value == steps[step][sent : sent + len(value)]
            step += 1
    assert sent == len(answer) or EOS in answer


def test_drafts_show_the_undecided_rest_with_its_masks():
    model = oracle_model({10: [11, 12, 13, 14, 15, 16]})
    streamer = Recorder()
    ids, mask = batch([[10, 20]])
    model.diffusion_generate(ids, mask, max_new_tokens=8, block_length=8, length_strategy="fixed", threshold=None,
                             unmasking="random", seed=0, streamer=streamer)
    drafts = [v for kind, v in streamer.calls if kind == "draft"]
    assert drafts and any(MASK in d for d in drafts)
    assert all(d[0] == MASK or d == [] for d in drafts if d), "a draft starts where the decided prefix ends"


def test_text_iterator_streamer_yields_the_answer_text_from_another_thread():
    model, tok = make_dlm("gpt2", seed=1)
    ids = tok(["hello"], return_tensors="pt").input_ids
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=model.diffusion_generate(
        ids, max_new_tokens=10, block_length=5, length_strategy="grow", streamer=streamer)))
    thread.start()
    text = "".join(streamer)
    thread.join()
    answer = tok.decode(result["out"][0, ids.shape[1] :], skip_special_tokens=True)
    assert text == answer


def test_text_diffusion_streamer_prints_the_final_text(capsys):
    model = oracle_model({10: [11, 12, 13]})

    class Tok:  # TextStreamer only needs decode
        def decode(self, ids, **kwargs):
            return "".join(chr(ord("a") + i - 10) for i in ids if i >= 10)

    ids, mask = batch([[10, 20]])
    model.diffusion_generate(ids, mask, max_new_tokens=8, block_length=4, length_strategy="grow",
                             streamer=TextDiffusionStreamer(Tok(), skip_prompt=True))
    assert capsys.readouterr().out.replace("\0337", "").replace("\0338\033[J", "").endswith("d\n")  # token 13 -> "d", then EOS


def test_a_batch_is_refused_and_a_failed_decode_still_ends_the_stream():
    model, tok = make_dlm()
    ids = tok(["ab", "cd"], return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="batch of 1"):
        model.diffusion_generate(ids, max_new_tokens=4, streamer=Recorder())
    streamer = Recorder()

    def stop(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.diffusion_generate(ids[:1], max_new_tokens=8, block_length=4, streamer=streamer, callback=stop)
    assert streamer.calls[-1] == ("end", None)


def test_streaming_does_not_change_the_answer():
    model, tok = make_dlm("qwen2", seed=2)
    ids = tok(["xyz"], return_tensors="pt").input_ids
    plain = model.diffusion_generate(ids, max_new_tokens=12, block_length=4)
    streamed = model.diffusion_generate(ids, max_new_tokens=12, block_length=4, streamer=Recorder())
    assert torch.equal(plain, streamed)
