"""Length, quality and speed measurements of a diffusion LM's answers, next to its autoregressive self.

- `answer_autoregressive` / `answer_diffusion`: answer chat prompts one batch at a time and time each call.
  Both return `Answer` records (text, token ids, whether an EOS came within the budget, NFE, seconds), so every
  comparison in docs/quality.md and `hf-dlm demo` uses the same bookkeeping.
- `generative_perplexity`: perplexity of answers under a causal LM, conditioned on their prompts. The `evaluate`
  library's `perplexity` metric loads its scorer from the Hub by name; this takes a model object, so it runs
  offline with the local SmolLM2 (the usual gen-PPL of diffusion-LM papers, e.g. MDLM and BD3-LM, scores
  unconditional samples under GPT-2 Large; here answers are scored given the question they answer).
- `distinct_n`: the share of n-grams that are distinct (Li et al. 2016, "A Diversity-Promoting Objective
  Function for Neural Conversation Models"), over a corpus or one answer; `is_degenerate` flags answers stuck
  in a loop.
- `length_summary`, `summarize`: the numbers the docs report.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .data import left_padded
from .settings_dlm import token_id_list

# An answer whose own distinct-4 ratio is below this is a loop ("Boil an egg:\n\nBoil an egg:\n\n..."):
# fluent text of 20+ tokens repeats few 4-grams (SmolLM2's ended greedy answers: median 1.0, 1st percentile > 0.8).
DEGENERATE_DISTINCT_4 = 0.5


@dataclass
class Answer:
    """One answer to one prompt. `tokens` excludes the EOS; `seconds` is the wall time of the batch that
    produced it divided by the batch size (exact for batch size 1, the interactive case)."""

    prompt: str
    text: str
    tokens: list[int]
    ended: bool
    nfe: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        record = asdict(self)
        record["length"] = len(self.tokens)
        extra = record.pop("extra")
        return record | extra


def chat_inputs(tokenizer, prompts: Sequence[str], chat_template: bool | None = None) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids` / `attention_mask` of user prompts; through the chat template when the tokenizer
    has one (unless `chat_template=False`)."""
    use_template = getattr(tokenizer, "chat_template", None) is not None if chat_template is None else chat_template
    if use_template:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    else:
        texts = list(prompts)
    # The chat template already wrote the special tokens; add_special_tokens would prepend a second BOS.
    return left_padded(tokenizer, texts, add_special_tokens=not use_template)


def split_answer(row: Sequence[int], eos_ids: Sequence[int], pad_id: int | None) -> tuple[list[int], bool]:
    """(answer tokens before the first EOS, whether an EOS came). Trailing pad is dropped."""
    tokens = []
    for token in row:
        if token in eos_ids:
            return tokens, True
        tokens.append(int(token))
    while tokens and tokens[-1] == pad_id:
        tokens.pop()
    return tokens, False


def _eos_ids(model) -> list[int]:
    """EOS ids of a causal LM or a DiffusionLM: its generation config's, else its config's."""
    eos = model.generation_config.eos_token_id
    return token_id_list(model.config.eos_token_id if eos is None else eos)


def autoregressive_ids(model, tokenizer) -> tuple[list[int], int]:
    """(EOS ids, pad id) for `generate` of a causal LM with the diffusion tokenizer: that tokenizer's dedicated pad
    is new to the AR model, so its first EOS pads instead (padding is masked out: any known id works)."""
    eos_ids, pad_id = _eos_ids(model), tokenizer.pad_token_id
    if pad_id is None or pad_id >= model.get_input_embeddings().num_embeddings:
        pad_id = eos_ids[0]
    return eos_ids, pad_id


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def answer_autoregressive(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 256,
                          batch_size: int = 1, chat_template: bool | None = None, **generate_kwargs) -> list[Answer]:
    """Answers of a causal LM with `model.generate` (greedy unless `do_sample=True` is passed). NFE = forwards =
    generated tokens of the longest row in the batch (one per token, the AR cost model)."""
    eos_ids, pad_id = autoregressive_ids(model, tokenizer)
    generate_kwargs.setdefault("do_sample", False)
    answers = []
    for batch in _batches(list(prompts), batch_size):
        inputs = {k: v.to(model.device) for k, v in chat_inputs(tokenizer, batch, chat_template).items()}
        inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, pad_id)
        start = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad_id, **generate_kwargs)
        seconds = time.perf_counter() - start
        generated = out[:, inputs["input_ids"].shape[1] :]
        for prompt, row in zip(batch, generated.tolist()):
            tokens, ended = split_answer(row, eos_ids, pad_id)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(prompt, text, tokens, ended, generated.shape[1], seconds / len(batch)))
    return answers


@torch.no_grad()
def answer_diffusion(model, tokenizer, prompts: Sequence[str], *, batch_size: int = 1,
                     chat_template: bool | None = None, callback=None, streamer=None, **settings) -> list[Answer]:
    """Answers of a `DiffusionLM` with `diffusion_generate(**settings)`. NFE = forwards the row took part in;
    `extra` holds the `predict` strategy's predicted length and whether the row grew past it."""
    eos_ids, pad_id = model.config.eos_token_ids, model.config.pad_token_id
    answers = []
    for batch in _batches(list(prompts), batch_size):
        inputs = {k: v.to(model.device) for k, v in chat_inputs(tokenizer, batch, chat_template).items()}
        start = time.perf_counter()
        out = model.diffusion_generate(**inputs, return_dict_in_generate=True, callback=callback, streamer=streamer,
                                       **settings)
        seconds = time.perf_counter() - start
        generated = out.sequences[:, inputs["input_ids"].shape[1] :]
        for i, (prompt, row) in enumerate(zip(batch, generated.tolist())):
            tokens, ended = split_answer(row, eos_ids, pad_id)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            extra = {}
            if out.predicted_lengths is not None:
                extra = {"predicted_length": int(out.predicted_lengths[i]), "grew": bool(out.grew[i])}
            answers.append(Answer(prompt, text, tokens, ended, int(out.nfe_per_row[i]), seconds / len(batch), extra))
    return answers


@torch.no_grad()
def answer_speculative(drafter, verifier, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 256,
                       draft_length: int = 4, chat_template: bool | None = None) -> list[Answer]:
    """Answers by draft and verify (`hf_dlm.speculative`): the verifier's greedy answers, drafted by the diffusion
    model. NFE = drafter + verifier forwards; `extra` holds both counts and the drafts kept per round."""
    from .speculative import speculative_generate

    eos_ids, pad_id = drafter.config.eos_token_ids, drafter.config.pad_token_id
    answers = []
    for prompt in prompts:  # one at a time: speculative_generate decodes rows one after the other anyway
        inputs = {k: v.to(drafter.device) for k, v in chat_inputs(tokenizer, [prompt], chat_template).items()}
        start = time.perf_counter()
        out = speculative_generate(drafter, verifier, **inputs, max_new_tokens=max_new_tokens,
                                   draft_length=draft_length)
        seconds = time.perf_counter() - start
        tokens, ended = split_answer(out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), eos_ids, pad_id)
        extra = {"draft_forwards": out.draft_forwards[0], "verify_forwards": out.verify_forwards[0],
                 "accepted": out.accepted[0], "proposed": out.proposed[0]}
        answers.append(Answer(prompt, tokenizer.decode(tokens, skip_special_tokens=True), tokens, ended,
                              out.nfe_per_row[0], seconds, extra))
    return answers


@torch.no_grad()
def answer_gated(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 256, draft_length: int = 4,
                 batch_size: int = 1, chat_template: bool | None = None, predraft: bool = False) -> list[Answer]:
    """Answers of a gated drafter (`model.speculative_generate`): its base's greedy answers, drafted and verified in
    one forward per round, rows batched. NFE = forwards the row took part in; `extra` holds the drafts kept per
    round and the drafts proposed."""
    eos_ids, pad_id = model.config.eos_token_ids, model.config.pad_token_id
    answers = []
    for batch in _batches(list(prompts), batch_size):
        inputs = {k: v.to(model.device) for k, v in chat_inputs(tokenizer, batch, chat_template).items()}
        start = time.perf_counter()
        out = model.speculative_generate(**inputs, max_new_tokens=max_new_tokens, draft_length=draft_length,
                                         predraft=predraft)
        seconds = time.perf_counter() - start
        generated = out.sequences[:, inputs["input_ids"].shape[1] :]
        for i, (prompt, row) in enumerate(zip(batch, generated.tolist())):
            tokens, ended = split_answer(row, eos_ids, pad_id)
            extra = {"accepted": out.accepted[i], "proposed": out.proposed[i]}
            answers.append(Answer(prompt, tokenizer.decode(tokens, skip_special_tokens=True), tokens, ended,
                                  out.verify_forwards[i], seconds / len(batch), extra))
    return answers


@torch.no_grad()
def generative_perplexity(model, tokenizer, answers: Sequence[Answer], *, batch_size: int = 8,
                          chat_template: bool | None = None) -> dict:
    """Perplexity of `answers` under the causal LM `model`, each conditioned on its prompt (chat template
    applied as in generation). The EOS of an answer that ended is scored too: stopping is part of the answer.

    Returns `ppl` (exp of the mean NLL over every scored token of every answer: the corpus-level number),
    `median_ppl` (median of per-answer perplexities, robust to one bad answer), `nll_per_answer` and `tokens`.
    """
    eos = _eos_ids(model)[0]
    nll_per_answer, counts = [], []
    for batch in _batches(list(answers), batch_size):
        inputs = chat_inputs(tokenizer, [a.prompt for a in batch], chat_template)
        targets = [a.tokens + ([eos] if a.ended else []) for a in batch]
        width = max(len(t) for t in targets)
        if width == 0:
            nll_per_answer += [0.0] * len(batch)
            counts += [0] * len(batch)
            continue
        pad = tokenizer.pad_token_id
        answer_ids = torch.tensor([t + [pad] * (width - len(t)) for t in targets])
        answer_mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in targets])
        input_ids = torch.cat([inputs["input_ids"], answer_ids], 1).to(model.device)
        attention_mask = torch.cat([inputs["attention_mask"], answer_mask], 1).to(model.device)
        prompt_length = inputs["input_ids"].shape[1]
        # Position ids that skip the left padding, as generate() uses, so scores match the generation setting.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        scores = logits[:, prompt_length - 1 : -1].float().log_softmax(-1)
        token_nll = -scores.gather(-1, answer_ids.to(model.device)[..., None]).squeeze(-1)
        token_nll = token_nll * answer_mask.to(model.device)
        nll_per_answer += token_nll.sum(-1).tolist()
        counts += answer_mask.sum(-1).tolist()
    total = sum(counts)
    per_answer = [math.exp(n / c) for n, c in zip(nll_per_answer, counts) if c]
    return {
        "ppl": math.exp(sum(nll_per_answer) / total) if total else float("nan"),
        "median_ppl": statistics.median(per_answer) if per_answer else float("nan"),
        "nll_per_answer": nll_per_answer,
        "tokens": counts,
    }


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Distinct n-grams / all n-grams over every sequence (token ids or words); 1.0 when there are none."""
    grams = [g for seq in sequences for g in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def is_degenerate(tokens: Sequence, n: int = 4, threshold: float = DEGENERATE_DISTINCT_4) -> bool:
    """The answer repeats itself: its own distinct-n is below `threshold`."""
    return distinct_n([tokens], n) < threshold


def quantiles(values: Sequence[float]) -> dict:
    """Mean, median, p10 / p90 (nearest rank, no interpolation: the values are token counts), min and max."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def quantile(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"mean": statistics.fmean(ordered), "median": statistics.median(ordered), "p10": quantile(0.1),
            "p90": quantile(0.9), "min": ordered[0], "max": ordered[-1]}


def length_summary(lengths: Sequence[int]) -> dict:
    return quantiles(lengths)


def summarize(answers: Sequence[Answer]) -> dict:
    """Length, ending, repetition and speed of a set of answers (everything but perplexity)."""
    token_lists = [a.tokens for a in answers]
    seconds = sum(a.seconds for a in answers)
    tokens = sum(len(t) for t in token_lists)
    return {
        "answers": len(answers),
        "ended_share": sum(a.ended for a in answers) / len(answers),
        "length": length_summary([len(t) for t in token_lists]),
        "distinct_1": distinct_n(token_lists, 1),
        "distinct_2": distinct_n(token_lists, 2),
        "distinct_4_per_answer": statistics.fmean(distinct_n([t], 4) for t in token_lists),
        "degenerate_share": sum(is_degenerate(t) for t in token_lists) / len(answers),
        "nfe_mean": statistics.fmean(a.nfe for a in answers),
        "tokens_per_forward": tokens / max(1, sum(a.nfe for a in answers)),
        "seconds_total": seconds,
        "seconds_mean": seconds / len(answers),
        "tokens_per_second": tokens / seconds if seconds else float("nan"),
    }


__all__ = [
    "Answer",
    "answer_autoregressive",
    "autoregressive_ids",
    "answer_diffusion",
    "answer_gated",
    "answer_speculative",
    "chat_inputs",
    "distinct_n",
    "generative_perplexity",
    "is_degenerate",
    "length_summary",
    "quantiles",
    "split_answer",
    "summarize",
]
