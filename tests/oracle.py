"""An oracle backbone: a stand-in for a causal LM whose predictions are known exactly.

Each prompt is identified by its first real token; the oracle knows that prompt's answer. Its raw logit at
position p scores the token at p + 1 (the AR convention, so DiffusionLM's shift applies): the answer token,
then EOS forever after (LLaDA-style EOS fill). Through the KV cache it "remembers" the tokens it was fed (they
are stored as the cached keys), so if the decoder crops or batch-selects its cache wrongly, the oracle sees a
wrong sequence and answers wrongly: the cache bookkeeping is under test too.
"""

from types import SimpleNamespace

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_dlm import DiffusionLM
from hf_dlm.configuration_dlm import DiffusionLMConfig
from hf_dlm.modeling_dlm import CACHE_NAME
from hf_dlm.testing import tiny_config

VOCAB = 40
EOS, PAD, MASK = 1, 2, 3
ANSWER_TOKENS = range(10, VOCAB)


class OracleBackbone(nn.Module):
    def __init__(self, answers: dict[int, list[int]], logit: float = 20.0, eos_logit: float | None = None,
                 early_eos: dict[int, float] | None = None):
        """`answers`: first prompt token -> answer ids. `eos_logit`: logit of EOS at answer positions (a hedge
        that makes p(EOS) high before the true end). `early_eos`: first prompt token -> how many positions before
        the answer's end that hedge starts (only while the position is still masked: the first step)."""
        super().__init__()
        self.answers = answers
        self.logit = logit
        self.eos_logit = eos_logit
        self.early_eos = early_eos or {}
        self.embed = nn.Embedding(VOCAB, 1)
        self.config = SimpleNamespace(_attn_implementation="sdpa")
        self.calls = 0

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None, use_cache=False,
                logits_to_keep=0, cache=None, **kwargs):
        past_key_values = cache if cache is not None else past_key_values  # transformers >= 5.24 names it `cache`
        self.calls += 1
        seen, seen_at = input_ids, position_ids
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            layer = past_key_values.layers[0]
            seen = torch.cat([layer.keys[:, 0, :, 0].long(), input_ids], dim=1)
            seen_at = torch.cat([layer.values[:, 0, :, 0].long(), position_ids], dim=1)
        if use_cache:
            # Keys: the tokens; values: their positions. The dual cache stores [prefix | suffix | block], so the
            # oracle puts what it remembers back in position order (stable: left padding shares position 0 and
            # comes first) before reading the prompt.
            past_key_values.update(input_ids[:, None, :, None].float(), position_ids[:, None, :, None].float(), 0)
        order = seen_at.argsort(dim=1, stable=True)
        seen, attention_mask = seen.gather(1, order), attention_mask.gather(1, order)
        batch, q = input_ids.shape
        logits = torch.zeros(batch, q, VOCAB)
        for b in range(batch):
            real = seen[b][attention_mask[b].bool()]
            answer = self.answers[int(real[0])]
            prompt_len = self._prompt_len(real)
            for j in range(q):
                target_index = int(position_ids[b, j]) + 1 - prompt_len
                token = answer[target_index] if 0 <= target_index < len(answer) else EOS
                logits[b, j, token] = self.logit
                hedge = self.early_eos.get(int(real[0]))
                if hedge is not None and token != EOS and len(answer) - target_index <= hedge and self.eos_logit:
                    # The hedge shows only where the canvas is still all masks: the first forward of `predict`.
                    if bool((real[prompt_len:] == MASK).all()):
                        logits[b, j, EOS] = self.eos_logit
        keep = logits_to_keep if logits_to_keep else q
        return CausalLMOutputWithPast(logits=logits[:, -keep:], **{CACHE_NAME: past_key_values})

    def _prompt_len(self, real: torch.Tensor) -> int:
        """Prompts are written with tokens < 10 only (ids 4..9), answers with ids >= 10, masks are 3."""
        is_prompt = (real >= 4) & (real < 10)
        return int(is_prompt.long().cumprod(0).sum())


def oracle_model(answers: dict[int, list[int]], **kwargs) -> DiffusionLM:
    config = DiffusionLMConfig(
        backbone_config=tiny_config("gpt2", VOCAB, hidden=8, layers=1, heads=1, positions=4096),
        mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS,
    )
    model = DiffusionLM(config)
    model.backbone = OracleBackbone(answers, **kwargs)
    return model.eval()


def batch(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into input_ids and attention_mask."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask
