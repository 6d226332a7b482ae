"""Draft and verify: a diffusion LM drafts a block, its AR base verifies it; output identical to AR greedy.

Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding"; Chen et
al. 2023) with a diffusion drafter, as in I-DLM's LoRA-assisted mode (arXiv 2604.11035): our adapted models are
their AR base plus a diffusion adapter, so the base is at hand to check every draft. One round:

1. draft: one forward of the diffusion model over [new prefix tokens | `draft_length` masks] (against its KV
   cache of the prefix) proposes a token for every mask at once (argmax);
2. verify: one forward of the causal LM over [last prefix token | drafts] (against its own KV cache) gives its
   greedy next token after the prefix and after every draft;
3. keep the longest prefix of drafts that equals the verifier's choices, plus the verifier's token after it (it
   is free: the same forward computed it). A round adds 1 to `draft_length + 1` tokens for two forwards.

Every kept token is the verifier's greedy choice given the tokens before it, so the answer is the verifier's greedy
`generate` answer whatever the drafts are (up to floating-point differences between scoring k tokens in one
forward and one at a time: exact in float32, measured in bfloat16 in docs/quality.md). The drafter only decides the
speed: tokens per forward = (accepted drafts + 1) / 2 per round, so it pays when more than about one draft in a
round is accepted, and a round whose drafts are all rejected still yields the verifier's token (never slower than
half of AR speed). Greedy only: sampling would need the rejection rule of Leviathan et al. with the drafter's
probabilities.

The drafter's cache follows the decoder's prefix cache (`decoder_dlm`, dLLM-Var's scheme): it holds the
prefix's keys/values as computed in the forward that first saw them (with masks after them: an approximation for
bidirectional models, which only changes the drafts, never the answer). The verifier's cache is exact.

Rows of a batch are decoded one after the other: their acceptance lengths differ, and batch 1 is the case
speculative decoding serves.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from .decoder_dlm import crop_cache
from .drafter_dlm import SpeculativeOutput
from .modeling_dlm import CACHE_NAME, config_max_positions
from .settings_dlm import (
    check_prompt_tensors,
    check_token_ids_in_vocabulary,
    token_id_list,
    validate_generation_settings,
)


def _check(drafter, verifier, input_ids, attention_mask, max_new_tokens, draft_length, eos_token_id) -> None:
    check_prompt_tensors(input_ids, attention_mask)
    validate_generation_settings({"eos_token_id": eos_token_id})  # a negative id would never match: no row ends
    if not isinstance(draft_length, int) or draft_length < 1:
        raise ValueError(f"draft_length must be an integer >= 1 (tokens drafted per round), got {draft_length!r}.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}.")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a non-empty 2D LongTensor [batch, prompt_length].")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}.")
    if not hasattr(drafter, "diffusion_generate"):
        raise TypeError(f"The drafter must be a DiffusionLM, got {type(drafter).__name__}.")
    if hasattr(verifier, "diffusion_generate") or not hasattr(verifier, "get_input_embeddings"):
        raise TypeError(f"The verifier must be a causal LM (its AR base), got {type(verifier).__name__}.")
    if attention_mask is not None and (attention_mask.sum(-1) == 0).any():
        raise ValueError("A prompt row has no real token (attention_mask all 0): every row needs at least one.")
    verifier_vocab = verifier.get_input_embeddings().num_embeddings
    # EOS must be an id the verifier can choose (else no row ever ends); the mask and the pad (the drafter's own
    # added tokens, beyond the verifier's vocabulary) must have rows in the drafter's embedding.
    eos = {"eos_token_id": eos_token_id if eos_token_id is not None else list(drafter.config.eos_token_ids)}
    check_token_ids_in_vocabulary(eos, verifier_vocab, "speculative_generate got", "pass ids of the verifier's "
                                  "tokenizer")
    check_token_ids_in_vocabulary({"mask_token_id": drafter.config.mask_token_id,
                                   "pad_token_id": drafter.config.pad_token_id},
                                  drafter.get_input_embeddings().num_embeddings, "the drafter's config.json has",
                                  "fix it in the drafter's config.json")
    if verifier_vocab > drafter.get_input_embeddings().num_embeddings:
        raise ValueError(
            f"The verifier's vocabulary ({verifier_vocab}) is larger than the drafter's: they must share a tokenizer "
            f"(the drafter = the verifier's vocabulary + the mask token)."
        )
    real = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
    if real.numel() and (real.min() < 0 or real.max() >= verifier_vocab):
        raise ValueError(
            f"input_ids contain ids outside the verifier's vocabulary [0, {verifier_vocab}): wrong tokenizer, or the "
            f"mask token in the prompt?"
        )
    # A round drafts at most the budget left minus one (it adds the drafts kept + 1), so no forward reaches past
    # prompt + max_new_tokens, whatever draft_length.
    for name, limit in (("drafter", drafter.max_positions), ("verifier", config_max_positions(verifier.config))):
        if limit is not None and input_ids.shape[1] + max_new_tokens > limit:
            raise ValueError(
                f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the {name}'s "
                f"{limit} positions: shorten the prompt or lower max_new_tokens."
            )


class _Row:
    """One prompt's draft-and-verify state: the sequence so far and both models' caches."""

    def __init__(self, drafter, verifier, prompt: torch.Tensor, draft_length: int, eos_ids: list[int]):
        self.drafter, self.verifier = drafter, verifier
        self.seq = prompt.tolist()
        self.prompt_length = len(self.seq)
        self.draft_length, self.eos_ids = draft_length, set(eos_ids)
        self.device = prompt.device
        self.mask_id = drafter.config.mask_token_id
        self.verifier_vocab = verifier.get_input_embeddings().num_embeddings
        self.draft_cache, self.drafted_upto = DynamicCache(), 0  # drafter: keys/values of seq[:drafted_upto]
        self.verify_cache, self.verified_upto = DynamicCache(), 0  # verifier: keys/values of seq[:verified_upto]
        self.draft_forwards = self.verify_forwards = self.proposed = 0
        self.accepted: list[int] = []

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def draft(self, k: int) -> list[int]:
        """k tokens proposed for the positions after the sequence, by one forward of the drafter."""
        new = self.seq[self.drafted_upto :]  # at least the last token: with the AR shift it scores the first mask
        start = self.drafted_upto
        ids = self._tensor(new + [self.mask_id] * k)
        positions = torch.arange(start, start + ids.shape[1], device=self.device)[None]
        # canvas_start: causal-prefix drafters read everything before the masks causally (the AR model's own
        # computation), so their first draft is the verifier's choice whenever the weights agree.
        everything = torch.ones(1, start + ids.shape[1], dtype=torch.long, device=self.device)
        out = self.drafter(input_ids=ids, attention_mask=everything, position_ids=positions,
                           cache=self.draft_cache, use_cache=True, logits_to_keep=k,
                           canvas_start=start + len(new))
        crop_cache(self.draft_cache, len(self.seq))  # keep the prefix, drop the masks
        self.drafted_upto = len(self.seq)
        self.draft_forwards += 1
        logits = out.logits[0, -k:].float()
        logits[:, self.verifier_vocab :] = -torch.inf  # the mask token (and any id the verifier lacks)
        return logits.argmax(-1).tolist()

    def verify(self, drafts: list[int]) -> list[int]:
        """The tokens this round adds: the drafts the verifier agrees with, then the verifier's own next token."""
        new = self.seq[self.verified_upto :]
        start = self.verified_upto
        ids = self._tensor(new + drafts)
        positions = torch.arange(start, start + ids.shape[1], device=self.device)[None]
        out = self.verifier(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=len(drafts) + 1,
                            **{CACHE_NAME: self.verify_cache})
        self.verify_forwards += 1
        choices = out.logits[0, -(len(drafts) + 1) :].argmax(-1).tolist()  # after seq[-1], after each draft
        kept = 0
        while kept < len(drafts) and drafts[kept] == choices[kept] and drafts[kept] not in self.eos_ids:
            kept += 1
        if drafts:
            self.accepted.append(kept)
            self.proposed += len(drafts)
        # The cache holds the prefix and the accepted drafts; the verifier's own token is fed next round.
        crop_cache(self.verify_cache, len(self.seq) + kept)
        self.verified_upto = len(self.seq) + kept
        return drafts[:kept] + [choices[kept]]

    def run(self, max_new_tokens: int) -> list[int]:
        while True:
            generated = len(self.seq) - self.prompt_length
            remaining = max_new_tokens - generated
            if remaining <= 0 or (generated and self.seq[-1] in self.eos_ids):
                return self.seq[self.prompt_length :]
            k = min(self.draft_length, remaining - 1)  # a round adds at most k + 1 tokens
            drafts = self.draft(k) if k > 0 else []
            added = self.verify(drafts)
            for token in added:  # stop at the first EOS
                self.seq.append(token)
                if token in self.eos_ids:
                    break


@torch.no_grad()
def speculative_generate(drafter, verifier, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                         *, max_new_tokens: int = 256, draft_length: int = 4,
                         eos_token_id: int | list[int] | None = None) -> SpeculativeOutput:
    """Greedy answers of `verifier` (a causal LM), drafted `draft_length` tokens at a time by `drafter` (a
    `DiffusionLM` adapted from it, sharing its tokenizer). See the module docstring.

    Args:
        drafter: the diffusion model (e.g. `load_default()`), used for drafts only.
        verifier: its AR base (e.g. `load_default(autoregressive=True)[1]`): the answer is its greedy answer.
        input_ids / attention_mask: left-padded prompts, as for `diffusion_generate`.
        max_new_tokens: the budget per row, EOS included.
        draft_length: masks drafted per round (a round costs one drafter and one verifier forward).
        eos_token_id: stop ids; default: the drafter's `config.eos_token_ids`.
    """
    _check(drafter, verifier, input_ids, attention_mask, max_new_tokens, draft_length, eos_token_id)
    eos_ids = token_id_list(eos_token_id) if eos_token_id is not None else list(drafter.config.eos_token_ids)
    pad_id = drafter.config.pad_token_id if drafter.config.pad_token_id is not None else eos_ids[0]
    input_ids = input_ids.to(drafter.device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(input_ids.device).bool()
    if (attention_mask[:, :-1] & ~attention_mask[:, 1:]).any():
        raise ValueError("Prompts must be left padded (padding before the text): set tokenizer.padding_side = 'left'.")
    output = SpeculativeOutput(sequences=input_ids)
    answers = []
    for row_ids, row_mask in zip(input_ids, attention_mask):
        row = _Row(drafter, verifier, row_ids[row_mask], draft_length, eos_ids)
        answers.append(row.run(max_new_tokens))
        output.draft_forwards.append(row.draft_forwards)
        output.verify_forwards.append(row.verify_forwards)
        output.accepted.append(row.accepted)
        output.proposed.append(row.proposed)
        output.new_tokens.append(len(answers[-1]))
    width = max(map(len, answers))
    tail = torch.full((len(answers), width), pad_id, dtype=torch.long, device=input_ids.device)
    for i, answer in enumerate(answers):
        tail[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
    output.sequences = torch.cat([input_ids, tail], dim=1)
    return output


__all__ = ["SpeculativeOutput", "speculative_generate"]
