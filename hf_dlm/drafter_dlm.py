"""The gated drafter: a low-rank adapter that acts only at mask positions, and the one-forward draft-and-verify loop.

Remote code: `modeling_dlm.py` imports this file, so it is copied next to every saved checkpoint; it imports only
torch, transformers and its sibling files (`configuration_dlm.py`, `decoder_dlm.py`, `stopping_dlm.py`, `settings_dlm.py`).
Built by `DiffusionLM.from_causal_lm(model, tokenizer, drafter="gated_lora")`.

The design is I-DLM's R-ISD (arXiv 2604.11035, repo Introspective-Diffusion/I-DLM) and Apple's gated-LoRA
multi-token prediction (arXiv 2507.11851):

- every base weight is frozen; a LoRA delta `B A x * alpha / r` is added to the output of each target linear layer
  **only at positions whose input token is the mask token** (the gate), and mask positions read a learned mask
  embedding of their own;
- clean positions attend causally and never to a mask (`gated_attention_mask`), so their hidden states, keys,
  values and logits are the causal LM's own, whatever the adapter holds: the base verifies, the adapter drafts;
- one forward over `[pending token, drafts of the last round, k masks]` (2k+1 positions at most) checks the drafts
  against the base's greedy choices (the logit after the pending token and after every draft), keeps the agreeing
  prefix plus the base's own next token, and, when every draft was kept, reads the next k drafts off the masks.
  The first mask stands for the base's token of this round (not known when the input is built); mask j's hidden
  state predicts the token j + 1 after it (next-token logits, no shift: hidden i scores token i + 1).

Every kept token is the base's greedy choice given the tokens before it, so the answer is the base's greedy
`generate` answer whatever the adapter learnt (exact in float32; bfloat16 may break near-ties differently when
k + 1 tokens are scored in one forward instead of one at a time). Training decides only the speed.

The attention among the masks of one round is `config.attention`: "causal" (I-DLM: mask j sees masks before it)
or "causal_prefix" (bidirectional within the draft block). Clean positions are causal in both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from .configuration_dlm import DRAFT_ATTENTION, DRAFTERS
from .decoder_dlm import crop_cache
from .settings_dlm import check_prompt_tensors, token_id_list
from .stopping_dlm import RowStops

# The linear layers of decoder blocks, by family: Llama / Qwen2 / SmolLM / Mistral and GPT-2 (Conv1D). The LM head is
# never adapted: it runs on the kept positions only (`logits_to_keep`), where the gate would not line up.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                   "c_attn", "c_proj", "c_fc")


def _in_out_features(module: torch.nn.Module) -> tuple[int, int]:
    """(in, out) of an `nn.Linear` or transformers' GPT-2 `Conv1D` (weight stored [in, out])."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0], module.weight.shape[1]
    raise TypeError(f"gated LoRA adapts nn.Linear or Conv1D layers, not {type(module).__name__}.")


class GatedLoRA(torch.nn.Module):
    """LoRA deltas for the target layers of a backbone, applied where `gate` is 1 (the mask positions).

    The deltas live here, not inside the backbone: the base weights keep their names (a saved checkpoint is the
    causal LM's state dict plus `drafter.*`), and the backbone's layers only gain a forward hook. `gate` [B, Q, 1]
    is set by `DiffusionLM.forward` before every backbone call; it is kept afterwards so that gradient
    checkpointing, which re-runs the forward during backward, sees the same gate.
    """

    def __init__(self, backbone: torch.nn.Module, rank: int, alpha: float, target_modules, hidden_size: int):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"drafter_rank must be an integer >= 1, got {rank!r}.")
        targets = tuple(target_modules) if target_modules else DEFAULT_TARGETS
        self.rank, self.scale = rank, float(alpha) / rank
        self.names: list[str] = []
        self.lora_A = torch.nn.ParameterDict()
        self.lora_B = torch.nn.ParameterDict()
        for name, module in backbone.named_modules():
            if name.rsplit(".", 1)[-1] not in targets or name.endswith("lm_head"):
                continue
            fan_in, fan_out = _in_out_features(module)
            key = re.sub(r"\W", "_", name)
            weight = next(module.parameters())
            # B = 0: the adapter starts as the identity on the base, A ~ Kaiming as in LoRA (Hu et al. 2021).
            a = torch.empty(rank, fan_in, dtype=weight.dtype, device=weight.device)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A[key] = torch.nn.Parameter(a)
            self.lora_B[key] = torch.nn.Parameter(torch.zeros(fan_out, rank, dtype=weight.dtype, device=weight.device))
            self.names.append(name)
        if not self.names:
            raise ValueError(
                f"No layer of this backbone is named one of {targets}: pass drafter_target_modules= with the names "
                f"of its linear layers (the last part of the module name, e.g. 'q_proj')."
            )
        self.mask_embedding = torch.nn.Parameter(torch.zeros(hidden_size))
        self.gate: torch.Tensor | None = None

    def attach(self, backbone: torch.nn.Module) -> None:
        """Register the gated delta as a forward hook on every target layer of `backbone`."""
        modules = dict(backbone.named_modules())
        for name in self.names:
            modules[name].register_forward_hook(self._hook_for(re.sub(r"\W", "_", name)))

    def _hook_for(self, key: str):
        def hook(module, args, output):
            gate = self.gate
            if gate is None:
                return output
            x = args[0]
            if gate.shape[:2] != x.shape[:2]:
                raise RuntimeError(
                    "The gated drafter's gate does not match this call's positions: call the model through "
                    "DiffusionLM.forward (it sets the gate from the mask tokens), not its backbone directly."
                )
            a, b = self.lora_A[key], self.lora_B[key]
            if x.dtype != a.dtype and not torch.is_autocast_enabled(x.device.type):
                x = x.to(a.dtype)
            delta = (x @ a.T) @ b.T
            # Three kernels per layer (two thin products and one fused multiply-add): decoding calls this hook on
            # every projection of every layer, where a CPU pays for each kernel launch more than for its FLOPs.
            if delta.dtype == output.dtype == gate.dtype:
                return torch.addcmul(output, gate, delta)
            return output + (gate.to(delta.dtype) * delta).to(output.dtype)

        return hook

    def set_gate(self, is_mask: torch.Tensor | None, dtype: torch.dtype | None = None) -> None:
        """Gate [B, Q, 1] = scale where the input is the mask token, 0 elsewhere (None when no position is one)."""
        if is_mask is None or not bool(is_mask.any()):
            self.gate = None
            return
        self.gate = is_mask[..., None].to(dtype or self.mask_embedding.dtype) * self.scale


def gated_attention_mask(query_is_mask: torch.Tensor, padding_mask: torch.Tensor, pattern: str = "causal") -> torch.Tensor:
    """4D bool mask [B, 1, Q, K] of a gated drafter's forward over cached + current positions in sequence order.

    A query sees the real keys up to itself (causal); a clean query never sees a mask key; with
    `pattern="causal_prefix"` a mask query also sees the later masks of its contiguous run (the draft block).
    `query_is_mask` [B, Q]: which current positions hold the mask token (the cache holds clean positions only).
    `padding_mask` [B, K]: 1 for real keys (holes of rejected drafts and left padding are 0).
    """
    batch, keys = padding_mask.shape
    queries = query_is_mask.shape[1]
    device = padding_mask.device
    key_pos = torch.arange(keys, device=device)
    query_pos = key_pos[keys - queries :]
    key_is_mask = torch.cat(
        [torch.zeros(batch, keys - queries, dtype=torch.bool, device=device), query_is_mask.bool()], dim=1
    )
    allowed = key_pos[None, None, :] <= query_pos[None, :, None]
    allowed = allowed & (~key_is_mask[:, None, :] | query_is_mask.bool()[:, :, None])
    if pattern == "causal_prefix":
        # Runs of consecutive masks: a mask query sees every key of its own run.
        run = torch.cumsum(~key_is_mask, dim=1)  # the same value along a run of masks
        same_run = (run[:, None, :] == run[:, keys - queries :, None]) & key_is_mask[:, None, :]
        allowed = allowed | (same_run & query_is_mask.bool()[:, :, None])
    allowed = allowed & padding_mask.bool()[:, None, :]
    allowed = allowed | (key_pos[None, None, :] == query_pos[None, :, None])  # no empty softmax row
    return allowed[:, None]


@dataclass
class SpeculativeOutput:
    """`sequences` [batch, prompt + generated] (left-padded prompts as given, answers right-padded with pad; an
    answer ends with its EOS when it ended); per row: `draft_forwards`, `verify_forwards` (forwards of the drafter
    and of the verifier; a gated drafter's forwards do both, counted as `verify_forwards`), `accepted` (drafts kept
    in each round that had drafts), `proposed` (drafts proposed, all rounds) and `new_tokens` (generated tokens, EOS
    included)."""

    sequences: torch.LongTensor
    draft_forwards: list[int] = field(default_factory=list)
    verify_forwards: list[int] = field(default_factory=list)
    accepted: list[list[int]] = field(default_factory=list)
    proposed: list[int] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    batch_forwards: int | None = None

    @property
    def nfe_per_row(self) -> list[int]:
        """Forwards per row (each costs about one forward of the same network)."""
        return [d + v for d, v in zip(self.draft_forwards, self.verify_forwards)]

    @property
    def nfe(self) -> int:
        """Forward passes of the whole call (rows of a batch share them in one-forward decoding; the two-model
        loop decodes rows one after the other, so there it is the sum over rows)."""
        return self.batch_forwards if self.batch_forwards is not None else sum(self.nfe_per_row)

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward of the row that made them, averaged over rows' tokens."""
        forwards = sum(self.nfe_per_row)
        return sum(self.new_tokens) / forwards if forwards else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Drafts kept / drafts proposed, over all rows and rounds (rounds without a draft excluded)."""
        kept = sum(sum(a) for a in self.accepted)
        proposed = sum(self.proposed)
        return kept / proposed if proposed else 0.0


class _Batch:
    """The live state of one-forward draft and verify: a shared KV cache and, per row, the decided tokens, the
    pending token (decided, not yet in the cache) and the drafts to check next.

    A round's input, per row: [holes, pending, drafts, mask blocks]. One mask block stands for the outcome "every
    draft kept" (I-DLM); with `predraft` (TiDAR's pre-drafting, arXiv 2511.08923) there is one block per possible
    outcome a = 0 .. drafts (block a sees the pending token and the first a drafts only), so the next drafts are
    ready whatever this round keeps and no round starts cold.
    """

    def __init__(self, model, input_ids, attention_mask, eos_ids, pad_id, max_new_tokens, draft_length, predraft,
                 streamer=None, stops: RowStops | None = None):
        self.model, self.streamer, self.stops = model, streamer, stops
        self.device = input_ids.device
        self.mask_id = model.config.mask_token_id
        self.pad_id, self.eos_ids = pad_id, set(eos_ids)
        self.budget, self.k, self.predraft = max_new_tokens, draft_length, predraft
        self.limit = model.max_positions
        self.bidirectional_block = model.config.attention == "causal_prefix"
        batch = input_ids.shape[0]
        self.rows = list(range(batch))  # original row index of each live row
        self.answers: list[list[int]] = [[] for _ in range(batch)]
        self.lengths = attention_mask.sum(-1).tolist()  # real tokens decided, prompt included
        self.specs: list[list[int]] = [[] for _ in range(batch)]
        self.forwards = [0] * batch
        self.accepted: list[list[int]] = [[] for _ in range(batch)]
        self.proposed = [0] * batch
        self.batch_forwards = 0
        self.cache = DynamicCache()
        self.slots = torch.zeros(batch, 0, dtype=torch.long, device=self.device)  # 1 = a real cached position
        # The first round feeds the whole prompt (its last token is the pending one).
        self.first = (input_ids, attention_mask.long())
        # Ids the base never emits: the mask token, and ids the adaptation added beyond the base's vocabulary.
        self.vocab = model.config.drafter_base_vocab_size or model.get_input_embeddings().num_embeddings

    def _clean_inputs(self):
        """[holes, pending, drafts] per row, right-aligned: ids, real (1 = not a hole), positions [rows, lead]."""
        if self.first is not None:
            ids, real = self.first
            self.first = None
            return ids, real, (real.cumsum(-1) - 1).clamp(min=0)
        lead = 1 + max(len(s) for s in self.specs)
        ids = torch.full((len(self.rows), lead), self.pad_id, dtype=torch.long)
        real = torch.zeros(len(self.rows), lead, dtype=torch.long)
        pos = torch.zeros(len(self.rows), lead, dtype=torch.long)
        for i in range(len(self.rows)):
            chain = [self.answers[self.rows[i]][-1]] + self.specs[i]
            start = lead - len(chain)
            ids[i, start:] = torch.tensor(chain)
            real[i, start:] = 1
            pos[i, start:] = torch.arange(self.lengths[i] - 1, self.lengths[i] - 1 + len(chain))
        return ids.to(self.device), real.to(self.device), pos.to(self.device)

    def _round_inputs(self, masks: int):
        """The round's ids, positions and 4D attention mask, and the outcome each mask block stands for."""
        ids, real, pos = self._clean_inputs()
        rows, lead = ids.shape
        drafts = torch.tensor([len(s) for s in self.specs], device=self.device)
        blocks = int(drafts.max()) + 1 if (self.predraft and masks) else (1 if masks else 0)
        # Block b stands for "the first a drafts kept": a = b with pre-drafts (capped at the row's drafts), else all.
        outcome = torch.minimum(torch.arange(blocks, device=self.device)[None], drafts[:, None]) if self.predraft \
            else drafts[:, None].expand(rows, blocks)
        pending_pos = pos[:, -1] - drafts  # position of the pending token
        j = torch.arange(masks, device=self.device)
        mask_pos = (pending_pos[:, None, None] + 1 + outcome[..., None] + j).reshape(rows, blocks * masks)
        if self.limit is not None:  # drafts past the budget are never used; keep their positions encodable
            mask_pos = mask_pos.clamp(max=self.limit - 1)
        queries = lead + blocks * masks
        ids = torch.cat([ids, torch.full((rows, blocks * masks), self.mask_id, device=self.device)], 1)
        pos = torch.cat([pos, mask_pos], 1)
        # Visibility among this round's positions: clean queries causal over the real clean keys; a block's masks
        # see the clean keys up to the pending token + its outcome's drafts, and their own block.
        index = torch.arange(queries, device=self.device)
        clean_key = (index[None, :] < lead) & torch.cat([real, torch.zeros(rows, queries - lead, dtype=torch.long,
                                                                            device=self.device)], 1).bool()
        query_block = ((index - lead) // max(masks, 1)).clamp(min=0)
        sees = torch.where(
            (index < lead)[None, :, None],
            index[None, None, :] <= index[None, :, None],
            index[None, None, :] <= (lead - 1 - drafts[:, None, None] + outcome.gather(
                1, query_block[None].expand(rows, -1).clamp(max=max(blocks - 1, 0)))[..., None])
            if blocks else torch.zeros(1, dtype=torch.bool, device=self.device),
        ) & clean_key[:, None, :]
        same_block = ((index[None, :] >= lead) & (index[:, None] >= lead)
                      & (query_block[None, :] == query_block[:, None]))
        if not self.bidirectional_block:
            same_block &= index[None, :] <= index[:, None]
        current = sees | same_block[None] | torch.eye(queries, dtype=torch.bool, device=self.device)[None]
        past = self.slots.bool()[:, None, :].expand(rows, queries, -1)
        attention = torch.cat([past, current], dim=2)[:, None]
        return ids, real, pos, attention, lead, blocks, outcome

    def step(self) -> None:
        live = len(self.rows)
        remaining = [self.budget - len(self.answers[r]) for r in self.rows]
        # Drafts help a row only if, after this round's tokens (at most its drafts + 1), budget is left.
        masks = max(0, min(self.k, max(rem - 1 - len(self.specs[i]) for i, rem in enumerate(remaining))))
        ids, real, pos, attention, lead, blocks, outcome = self._round_inputs(masks)
        out = self.model(input_ids=ids, attention_mask=attention, position_ids=pos, cache=self.cache, use_cache=True,
                         shift_logits=False)
        self.batch_forwards += 1
        logits = out.logits.float()
        logits[..., self.vocab :] = -torch.inf
        logits[..., self.mask_id] = -torch.inf
        choices = logits.argmax(-1).tolist()  # [live, lead + blocks * masks]
        keep_slots = real.clone()
        finished = []
        for i in range(live):
            row = self.rows[i]
            specs = self.specs[i]
            self.forwards[row] += 1
            verdicts = choices[i][lead - 1 - len(specs) : lead]  # after the pending token and after each draft
            kept = 0
            while kept < len(specs) and specs[kept] == verdicts[kept] and specs[kept] not in self.eos_ids:
                kept += 1
            if specs:
                self.accepted[row].append(kept)
                self.proposed[row] += len(specs)
            keep_slots[i, lead - len(specs) + kept : lead] = 0  # rejected drafts become holes of the cache
            new = (specs[:kept] + [verdicts[kept]])[: remaining[i]]
            answer = self.answers[row]
            before = len(answer)
            for token in new:
                answer.append(token)
                if token in self.eos_ids:
                    break
            stop = self.stops.stop_in(row, answer) if self.stops is not None else None
            if stop is not None:  # a stop string or criterion: the answer ends with the token that completed it
                del answer[stop:]
            if self.streamer is not None:  # batch 1 (checked): the round's decided tokens, as `generate` streams
                self.streamer.put(torch.tensor(answer[before:]))
            self.lengths[i] += len(new)
            done = len(answer) >= self.budget or answer[-1] in self.eos_ids or stop is not None
            # The block that stood for this outcome drafted the tokens after this round's base token; without
            # pre-drafts only "every draft kept" has one, and any rejection leaves the next round without drafts.
            block = kept if self.predraft else 0
            has_block = blocks > 0 and int(outcome[i, min(block, blocks - 1)]) == kept
            start = lead + block * masks
            self.specs[i] = choices[i][start : start + masks] if (has_block and not done) else []
            self.specs[i] = self.specs[i][: max(self.budget - len(answer) - 1, 0)]  # a round adds its drafts + 1
            if done:
                finished.append(i)
        # Keep the clean positions, drop the masks (the cache holds no mask position between rounds).
        crop_cache(self.cache, self.slots.shape[1] + lead)
        self.slots = torch.cat([self.slots, keep_slots], dim=1)
        if finished:
            stay = [i for i in range(live) if i not in finished]
            if stay:
                index = torch.tensor(stay, device=self.device)
                self.cache.batch_select_indices(index)
                self.slots = self.slots[index]
            self.rows = [self.rows[i] for i in stay]
            self.specs = [self.specs[i] for i in stay]
            self.lengths = [self.lengths[i] for i in stay]

    def run(self) -> None:
        while self.rows:
            self.step()


def check_speculative_arguments(model, input_ids, attention_mask, max_new_tokens, draft_length):
    if not isinstance(draft_length, int) or isinstance(draft_length, bool) or draft_length < 1:
        raise ValueError(f"draft_length must be an integer >= 1 (masks drafted per forward), got {draft_length!r}.")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}.")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] == 0 \
            or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a non-empty 2D LongTensor [batch, prompt_length].")
    check_prompt_tensors(input_ids, attention_mask)  # integer ids, 0/1 mask: the decoder's own rule
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}.")
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("A prompt row has no real token (attention_mask all 0): every row needs at least one.")
        if (attention_mask[:, :-1].bool() & ~attention_mask[:, 1:].bool()).any():
            raise ValueError("Prompts must be left padded (padding before the text): set tokenizer.padding_side = 'left'.")
    limit = model.max_positions
    if limit is not None and input_ids.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's {limit} "
            f"positions: shorten the prompt or lower max_new_tokens."
        )


@torch.no_grad()
def gated_speculative_generate(model, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, *,
                               max_new_tokens: int = 256, draft_length: int = 4,
                               eos_token_id: int | list[int] | None = None,
                               predraft: bool = False, streamer=None, stop_strings=None, tokenizer=None,
                               stopping_criteria=None) -> SpeculativeOutput:
    """Greedy answers of a gated drafter's base, one forward per round (module docstring). Rows of a batch share
    every forward and leave it when they end; each row may keep a different number of drafts per round.
    `predraft=True` drafts for every possible outcome of the round (TiDAR): (k + 1) * k masks instead of k.
    `streamer` (batch 1, transformers' `put` / `end` protocol): the prompt, then each round's decided tokens;
    `end()` when decoding stops, also when it fails. `stop_strings` (with `tokenizer`) / `stopping_criteria`: a row
    ends at the token that completes a stop string, checked after every round (`stopping_dlm.RowStops`)."""
    check_speculative_arguments(model, input_ids, attention_mask, max_new_tokens, draft_length)
    eos_ids = list(model.config.eos_token_ids) if eos_token_id is None else token_id_list(eos_token_id)
    vocab = model.get_input_embeddings().num_embeddings
    if not eos_ids or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab for i in eos_ids):
        raise ValueError(f"eos_token_id must be one or more token ids in [0, {vocab}), got {eos_token_id!r}.")
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else eos_ids[0]
    input_ids = input_ids.to(model.device)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
    real = input_ids[attention_mask.bool()]
    if real.min() < 0 or real.max() >= vocab:
        raise ValueError(f"input_ids contain ids outside the vocabulary [0, {vocab}): wrong tokenizer for this model?")
    if (real == model.config.mask_token_id).any():
        raise ValueError(f"The prompt contains the mask token (id {model.config.mask_token_id}): remove it from the text.")
    if streamer is not None and input_ids.shape[0] != 1:
        raise ValueError(f"streamer= streams one answer: pass a batch of 1 prompt (got {input_ids.shape[0]}).")
    stops = RowStops.for_batch(input_ids, attention_mask, model.config.mask_token_id, eos_ids, pad_id, stop_strings,
                               tokenizer, stopping_criteria)
    state = _Batch(model, input_ids, attention_mask, eos_ids, pad_id, max_new_tokens, draft_length, predraft,
                   streamer, stops)
    if streamer is not None:
        streamer.put(input_ids[0][attention_mask[0].bool()].cpu())
    try:
        state.run()
    finally:
        if streamer is not None:
            streamer.end()
    width = max(map(len, state.answers))
    tail = torch.full((len(state.answers), width), pad_id, dtype=torch.long, device=input_ids.device)
    for i, answer in enumerate(state.answers):
        tail[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
    output = SpeculativeOutput(
        sequences=torch.cat([input_ids, tail], dim=1), draft_forwards=[0] * len(state.answers),
        verify_forwards=state.forwards, accepted=state.accepted, proposed=state.proposed,
        new_tokens=[len(a) for a in state.answers], batch_forwards=state.batch_forwards,
    )
    return output


__all__ = [
    "DEFAULT_TARGETS",
    "DRAFTERS",
    "DRAFT_ATTENTION",
    "GatedLoRA",
    "SpeculativeOutput",
    "gated_attention_mask",
    "gated_speculative_generate",
]
