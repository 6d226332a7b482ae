"""Ending rows early at stop strings and stopping criteria, on the answer's decided prefix.

Remote code: copied next to every saved checkpoint; imports only torch, transformers and its sibling files.

An autoregressive decoder checks its stopping criteria after every token. A diffusion decoder commits tokens
anywhere in the block, so a stop string is only certain once every position before it is committed: the *decided
prefix* (the answer up to its first mask, cut after its first EOS), which only grows. After every step the decoder
asks `RowStops` about the rows whose decided prefix grew; the first prefix length at which a stop string appears,
or a criterion says stop, ends the row there. As in transformers' `generate` (`StopStringCriteria`), the answer
keeps the token that completes the stop string and ends after it; the text after the stop string inside that token
stays too (lm-eval, like transformers' users, cuts the text at the stop string itself).

Stop strings are matched on the decoded answer (special tokens kept, so a stop string may name one): unlike
transformers, which matches at the end of prompt + answer, a stop string that starts in the prompt and ends in the
answer does not count here, as in lm-eval's own `until` handling and OpenAI's `stop`.
`stopping_criteria` (transformers `StoppingCriteria` objects, or callables `(input_ids, scores) -> bool tensor`)
see the row as an autoregressive decoder would have it after each token: `[1, prompt + k]` for every new decided
length k, with `scores=None` (the diffusion decoder has no per-token scores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch


def decided_length(answer: Sequence[int], mask_id: int, eos_ids: Iterable[int], pad_id: int | None,
                   known: int = 0) -> int:
    """Length of the decided prefix of `answer` (canvas tokens): up to the first mask, through the first EOS, and
    never into the padding past the canvas (`pad_id`, unless it is an EOS id). `known`: a length already known to be
    decided (the prefix only grows), where the scan starts."""
    eos_ids = set(eos_ids)
    if known and answer[known - 1] in eos_ids:
        return known
    pad_ends = pad_id is not None and pad_id not in eos_ids
    length = known
    for token in answer[known:]:
        if token == mask_id or (pad_ends and token == pad_id):
            break
        length += 1
        if token in eos_ids:
            break
    return length


class RowStops:
    """Stop strings and stopping criteria for one `diffusion_generate` call; see the module docstring.

    `prompts`: each row's real prompt tokens (padding removed), for the criteria. `check(rows, canvas)` returns, per
    row, the answer length to keep (the prefix ending with the stopping token), or -1 to go on."""

    def __init__(self, prompts: list[list[int]], mask_id: int, eos_ids: Sequence[int], pad_id: int | None,
                 stop_strings: str | Sequence[str] | None = None, tokenizer=None,
                 stopping_criteria: Iterable[Callable] | None = None):
        stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if not all(isinstance(s, str) for s in stop_strings):
            raise ValueError(f"stop_strings must be a string or a list of strings, got {stop_strings!r}.")
        self.stop_strings = [s for s in stop_strings if s]
        if self.stop_strings and tokenizer is None:
            raise ValueError("stop_strings need the tokenizer to read the answer: pass tokenizer=<the model's "
                             "tokenizer> too, as with transformers' generate.")
        self.tokenizer = tokenizer
        self.criteria = list(stopping_criteria or [])
        self.prompts = prompts
        self.mask_id, self.eos_ids, self.pad_id = mask_id, list(eos_ids), pad_id
        self.checked = [0] * len(prompts)  # decided length already checked, per row

    @classmethod
    def for_batch(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int, eos_ids: Sequence[int],
                  pad_id: int | None, stop_strings=None, tokenizer=None, stopping_criteria=None) -> RowStops | None:
        """The stops of a left-padded batch (each row's prompt is its attended tokens), or None when there is
        nothing to check."""
        if not (stop_strings or stopping_criteria):
            return None
        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
        return cls(prompts, mask_id, eos_ids, pad_id, stop_strings, tokenizer, stopping_criteria)

    def __bool__(self) -> bool:
        return bool(self.stop_strings or self.criteria)

    def check(self, rows: torch.Tensor, canvas: torch.Tensor) -> torch.LongTensor:
        keep = torch.full((len(rows),), -1, dtype=torch.long)
        for i, (row, answer) in enumerate(zip(rows.tolist(), canvas.tolist())):
            length = decided_length(answer, self.mask_id, self.eos_ids, self.pad_id, self.checked[row])
            stop = self.stop_in(row, answer[:length])
            if stop is not None:
                keep[i] = stop
        return keep.to(rows.device)

    def stop_in(self, row: int, decided: list[int]) -> int | None:
        """The answer length at which `row` stops, given its decided tokens so far (they only grow), or None. The
        gated drafter's loop calls it directly: every token it appends is decided."""
        known = self.checked[row]
        if len(decided) <= known:
            return None
        self.checked[row] = len(decided)
        return self._first_stop(row, decided, known, len(decided))

    def _first_stop(self, row: int, answer: list[int], known: int, length: int) -> int | None:
        """The shortest decided length in (known, length] that ends the row, or None."""
        stop = None
        if self.stop_strings and self._has_stop(answer[:length]):
            # The prefix of `known` tokens had none: the stop completes at one of the new tokens.
            stop = next(k for k in range(known + 1, length + 1) if self._has_stop(answer[:k]))
        if self.criteria:
            for k in range(known + 1, (stop or length) + 1):
                ids = torch.tensor([self.prompts[row] + answer[:k]])
                if any(bool(torch.as_tensor(criterion(ids, None)).any()) for criterion in self.criteria):
                    return k
        return stop

    def _has_stop(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return any(s in text for s in self.stop_strings)


__all__ = ["RowStops", "decided_length"]
