"""DiffusionLM: a causal LM's backbone run as a masked diffusion denoiser.

Remote code: copied next to every saved checkpoint; imports only torch, transformers and its sibling files.

What changes from the causal LM (DiffuGPT / DiffuLLaMA, github.com/HKUNLP/DiffuLLaMA):
- attention is bidirectional, through transformers' own switch (`config.is_causal = False`, transformers >= 5.2),
  which builds a padding-aware bidirectional mask for the eager and sdpa kernels. A 4D mask passed by the caller
  (attention annealing during training) is used instead; a bool one is made additive first (the eager kernel adds
  masks to the attention scores).
- the AR shift is kept: hidden state i-1 scores token i. `forward` returns logits aligned to positions,
  `logits[:, i]` = prediction for token i, so position 0 (never predicted) repeats position 1's input logit.
- nothing else: no time embedding, all AR weights reused.

With `config.attention = "causal_prefix"` (block diffusion with a causal context, see DiffusionLMConfig) the
positions before `canvas_start` attend causally and the canvas from `canvas_start` on attends to everything, or, with
`canvas_block_length` (the decoder's), to everything up to the end of its own block: `causal_prefix_mask` builds that
4D mask from the 2D padding mask.

With `config.drafter = "gated_lora"` the model drafts for its own base (`drafter_dlm.py`): the base is frozen, an
adapter acts only at mask positions, clean positions are causal and never see a mask, and
`speculative_generate` drafts and verifies in one forward per round.
"""

import importlib
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from .adapt import prepare_causal_lm
from .configuration_dlm import MASK_HONOURING_ATTENTION, DiffusionLMConfig
from .drafter_dlm import GatedLoRA, gated_attention_mask, gated_speculative_generate
from .generation_dlm import DiffusionGenerationConfig, DiffusionGenerationMixin

# Auto classes a saved checkpoint loads with through `trust_remote_code=True` (written to config.json's auto_map).
# AutoModelForCausalLM because transformers' "text-generation" pipeline loads its model with that class only.
REMOTE_AUTO_CLASSES = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM")
# transformers 5.24 renamed `past_key_values` to `cache` in forward signatures and model outputs (the old name
# still works there, with a deprecation warning). The backbone is called and read with the name its release uses.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class DiffusionLMOutput(ModelOutput):
    """`logits[:, i]` scores the token at position i (already shifted when `config.shift_logits`)."""

    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def past_key_values(self) -> Cache | None:
        """The cache under its pre-5.24 transformers name."""
        return self.cache


def position_ids_from_attention_mask(attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """Positions that skip left padding (Dream, LLaDA batch code): the first real token gets position 0.

    `attention_mask` covers cached + current tokens; the positions of the last `query_length` are returned.
    """
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.clamp(min=0)[:, -query_length:]


def causal_prefix_mask(
    padding_mask: torch.Tensor,
    query_length: int,
    canvas_start: int | torch.Tensor,
    key_positions: torch.Tensor | None = None,
    block_length: int | None = None,
) -> torch.BoolTensor:
    """4D bool mask [B, 1, Q, K] of `attention="causal_prefix"`: a query before `canvas_start` sees the keys up to
    itself (the causal LM's own attention), a query at or after it sees every key; never padding. With
    `block_length`, the canvas is block-causal (BD3-LM): a canvas query sees the keys up to the end of its own block
    (counted from `canvas_start`), never the masks of later blocks, which is the view two-stream training gives.

    `padding_mask` [B, K] covers cached + current positions (1 = real token); the queries are its last
    `query_length` positions. `canvas_start` (int or [B]) indexes the same positions. `key_positions` [K]: where
    each key sits in the sequence when the cache holds them out of order (the dual KV cache stores
    [prefix | canvas after the block | block]); default: in order, 0..K-1.
    """
    batch, keys = padding_mask.shape
    device = padding_mask.device
    key_pos = torch.arange(keys, device=device) if key_positions is None else key_positions.to(device)
    query_pos = key_pos[keys - query_length :]
    start = torch.as_tensor(canvas_start, device=device).reshape(-1, 1, 1).expand(batch, 1, 1)
    in_canvas = query_pos[None, :, None] >= start
    if block_length is None:
        sees = in_canvas
    else:
        offset = query_pos[None, :, None] - start  # of each query from the canvas start
        block_end = start + (offset.div(block_length, rounding_mode="floor") + 1) * block_length
        sees = in_canvas & (key_pos[None, None, :] < block_end)
    allowed = (key_pos[None, None, :] <= query_pos[None, :, None]) | sees
    allowed = allowed & padding_mask.bool()[:, None, :]
    # A padding query sees only itself: a softmax over no key at all gives NaN.
    allowed = allowed | (key_pos[None, None, :] == query_pos[None, :, None])
    return allowed[:, None]


class FewRowsHead(torch.nn.Linear):
    """The LM head, with the product for the few rows a decoding forward scores computed as `W @ x^T`.

    A forward of block decoding scores the block plus its anchor (4-5 rows at batch 1) against the whole vocabulary,
    and on CPU `nn.Linear` (x @ W^T) is slow there. Measured on our 2-core AMD EPYC (MKL, oneDNN;
    `python benchmarks/lm_head_product.py --decode`, benchmarks/results/lm_head_product.json):
    - float32, SmolLM2's 49152x576 head alone: 11.6 ms for 5 rows (twice the one-row cost) against 3.7 ms as
      `W @ x^T`, the weight as the untransposed operand; 2 to 16 rows 1.3-6x faster, from 17 rows on the same.
    - bfloat16, the head alone: `nn.Linear` is the faster (2.6 against 3.8 ms at 5 rows); but inside the decoding
      loop its calls in the first forward of each block take ~37 ms, while `W @ x^T` stays at ~7 ms. The trigger
      is the input's layout: `hidden[:, -n:]` of a longer forward keeps the whole sequence's batch stride, and
      torch's bfloat16 kernel takes such a [1, 4, 576] input at ~40 ms against ~3 ms with natural strides
      (reproduced with a plain weight tensor, not always with an nn.Parameter). The embedded default's forward
      (bfloat16): 36.7 -> 29.2 ms; the same answers to the 62 held-out prompts (docs/decoding.md).
    Inference on CPU only (no autograd graph); on GPU, with gradients, or past `FEW_ROWS` rows it is `nn.Linear`.
    Same weights, tie and state dict: `DiffusionLM.use_few_rows_head()` swaps its head's class in place, an explicit
    step (the default-model loader takes it); `forward` never changes a module's class."""

    FEW_ROWS = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if x.device.type != "cpu" or torch.is_grad_enabled() or not 1 < rows <= self.FEW_ROWS:
            return super().forward(x)
        out = torch.matmul(self.weight, x.reshape(rows, x.shape[-1]).T).T
        if self.bias is not None:
            out = out + self.bias
        return out.contiguous().view(*x.shape[:-1], self.out_features)  # row-major [..., vocab] like F.linear's


class DiffusionLMPreTrainedModel(PreTrainedModel):
    config_class = DiffusionLMConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def _check_and_adjust_attn_implementation(self, attn_implementation, *args, **kwargs):
        # Runs for from_pretrained(attn_implementation=...) and set_attn_implementation: refuse with our message
        # (what to use instead) before transformers' generic "not supported yet, open an issue".
        check_attention_implementation(attn_implementation)
        return super()._check_and_adjust_attn_implementation(attn_implementation, *args, **kwargs)


class DiffusionLM(DiffusionGenerationMixin, DiffusionLMPreTrainedModel):
    """A causal LM turned into a masked diffusion LM. Build one with `DiffusionLM.from_causal_lm(...)`."""

    generation_config_class = DiffusionGenerationConfig
    # What `register_for_auto_class("AutoModel")` would set, declared on the class: `save_pretrained` writes
    # `auto_map` (every REMOTE_AUTO_CLASSES entry) and copies the *_dlm.py files whether or not anything registered it.
    _auto_class = "AutoModel"
    # Empty on purpose: the backbone declares its own tie (lm_head <-> embeddings) and transformers/peft collect it
    # from there. peft looks for this attribute on the outer model; unset (None), it misses the tie and a trained
    # mask-token row would reach the input embedding but not the LM head.
    _tied_weights_keys = {}

    def __init__(self, config: DiffusionLMConfig):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError(
                "DiffusionLMConfig has no backbone_config. Build the model with DiffusionLM.from_causal_lm(...) "
                "or pass DiffusionLMConfig(backbone_config=<a causal LM config>, mask_token_id=...)."
            )
        backbone_config = config.backbone_config
        backbone_config.is_causal = False  # transformers' bidirectional switch for decoder-only models
        backbone_config._attn_implementation = config._attn_implementation
        check_attention_implementation(backbone_config._attn_implementation)
        self.backbone = AutoModelForCausalLM.from_config(backbone_config)
        self.drafter = None
        if config.drafter is not None:
            self.build_drafter()
        self.post_init()

    def build_drafter(self) -> None:
        """Give the backbone its gated adapter (`config.drafter`), freeze every base weight and hook the adapter into
        the target layers. Called by `__init__`, and by `from_causal_lm` once the loaded causal LM is the backbone."""
        config = self.config
        rank = config.drafter_rank
        alpha = config.drafter_alpha if config.drafter_alpha is not None else 2 * rank
        hidden = self.get_input_embeddings().weight
        self.backbone.requires_grad_(False)
        self.drafter = GatedLoRA(self.backbone, rank, alpha, config.drafter_target_modules, hidden.shape[1])
        self.drafter.to(device=hidden.device, dtype=hidden.dtype)
        self.drafter.attach(self.backbone)

    @classmethod
    def from_causal_lm(cls, model_or_path, tokenizer=None, **kwargs):
        """Turn a causal LM into a `DiffusionLM`, keeping every AR weight (the recipe: `hf_dlm.adapt`).

        Args:
            model_or_path: a loaded causal LM (`...ForCausalLM`), a Hub id (`"gpt2"`) or a local directory.
            tokenizer: its tokenizer; loaded from `model_or_path` when omitted (required for a model instance).
                Modified in place: a mask token (and a pad token, if missing) is added. The returned model keeps it
                as `model.tokenizer`, and `save_pretrained` writes it next to the weights.
            gguf_file: file name of a GGUF checkpoint inside `model_or_path` (needs the `gguf` package).
            mask_token: the string of the mask token to add when the tokenizer has none (default "<|mask|>").
            attn_implementation: "sdpa" (default) or "eager" (kernels that honour bidirectional and 4D masks).
            attention: "bidirectional" (DiffuLLaMA, the default) or "causal_prefix" (block diffusion with a causal
                context: the prompt and committed blocks keep the causal LM's attention; see `DiffusionLMConfig`).
                For a gated drafter: how the masks of a draft block attend to each other, "causal" (the default,
                I-DLM) or "causal_prefix" (bidirectional within the block).
            dtype: dtype to load the weights in (default: the checkpoint's, float32 for GGUF).
            drafter: "gated_lora" makes a drafter for the causal LM itself (`drafter_dlm.py`): base weights frozen,
                a low-rank adapter of rank `drafter_rank` (default 32; scale `drafter_alpha / rank`, default 2) on
                the layers named in `drafter_target_modules` (default: every attention and MLP projection) acting
                only at mask positions; decode with `model.speculative_generate(...)`.
            load_kwargs: passed to `from_pretrained` (`revision`, `token`, `trust_remote_code`, ...) when loading
                from a Hub id or a directory; refused with a model instance (there is nothing to load).

        The causal LM passed in becomes the returned model's backbone (no copy). When tokens are added, its input
        embedding and LM head get new, larger Parameter objects (ties kept; see `adapt.resize_embeddings_with_mean`):
        an optimizer built on the causal LM before adapting holds the old ones and would not update those rows.
        Build the optimizer (or the `DiffusionTrainer`) after adapting."""
        causal_lm, tokenizer, config = prepare_causal_lm(model_or_path, tokenizer, **kwargs)
        backbone_config = causal_lm.config
        # Build the wrapper on the meta device, then hand it the already-loaded backbone: no second copy of the weights.
        with torch.device("meta"):
            model = cls(config)
        backbone_config.is_causal = False
        backbone_config._attn_implementation = config._attn_implementation
        model.backbone = causal_lm
        model.config.backbone_config = backbone_config
        model.generation_config = model.generation_config_class.from_model_config(config)
        if config.drafter is not None:
            model.build_drafter()
            with torch.no_grad():  # masks start as the new mask token's row: the mean embedding
                model.drafter.mask_embedding.copy_(model.get_input_embeddings().weight[tokenizer.mask_token_id])
        model.tokenizer = tokenizer
        model.eval()
        return model

    def save_pretrained(self, save_directory, *args, tokenizer=None, model_card_metrics=None, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors, config with `auto_map`, generation config, the *_dlm.py
        remote-code files), plus the tokenizer: `tokenizer=` or the one `from_causal_lm` attached, plus a model card
        (README.md with Hub metadata) where hf_dlm is installed and no README of the user's is there.
        `model_card_metrics`: measured numbers (name -> value) to show on the card, kept for later saves; a value
        that is a `huggingface_hub.EvalResult` (or a dict of its fields: task, dataset, metric) also goes into the
        card's `model-index`."""
        if self._auto_class is not None:  # always for DiffusionLM; None only if a subclass opts out
            # transformers writes one model entry in `auto_map` (the class's single `_auto_class`); list every Auto
            # class the checkpoint should load with, so that AutoModel, AutoModelForMaskedLM and AutoModelForCausalLM
            # (the text-generation pipeline) all work remotely.
            name = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            self.config.auto_map = auto_map | {auto: name for auto in REMOTE_AUTO_CLASSES}
        super().save_pretrained(save_directory, *args, **kwargs)
        tokenizer = tokenizer if tokenizer is not None else getattr(self, "tokenizer", None)
        if tokenizer is not None and kwargs.get("is_main_process", True):
            tokenizer.save_pretrained(save_directory)
        card_writer = model_card_writer()
        if card_writer is not None and kwargs.get("is_main_process", True):
            card_writer(save_directory, self, metrics=model_card_metrics)

    def _upload_modified_files(self, working_dir, repo_id, *args, **kwargs):
        """`push_to_hub`'s last step before uploading. By then transformers has replaced the README.md that
        `save_pretrained` wrote with the Hub repository's card, or with its generic draft when the repository has
        none; a draft gives way to hf_dlm's card (named after `repo_id`), a card of the repository's stays."""
        card_writer = model_card_writer()
        if card_writer is not None:
            card_writer(working_dir, self, repo_id)
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)

    def use_few_rows_head(self, enabled: bool = True) -> "DiffusionLM":
        """Compute the LM head's product for the 2-16 rows a decoding forward scores as `W @ x^T` (`FewRowsHead`);
        `enabled=False` makes it a plain `nn.Linear` again. Idempotent; returns the model.

        Why: on CPU (MKL), `nn.Linear`'s `x @ W^T` for a few rows against a whole vocabulary is slow: SmolLM2's
        head in float32 takes 11.6 ms for 5 rows against 3.7 ms as `W @ x^T` (1.3-6x for 2-16 rows); in bfloat16
        the decoding loop's strided inputs hit a slow kernel, and the embedded default's forward goes from 36.7 to
        29.2 ms (FewRowsHead's docstring has the details; `benchmarks/lm_head_product.py` measures both). The head
        keeps its weights, tie and state dict, and computes as `nn.Linear` on GPU, under autograd and past 16 rows,
        so training and saving are unchanged. An explicit step rather than a side effect of `forward`: a module
        whose class changes while it runs surprises hooks, copies and wrappers (PEFT) made before.

        Raises ValueError if the head is not a plain `nn.Linear` (e.g. a PEFT LoRA layer on `lm_head`: merge the
        adapter first with `merge_and_unload()`)."""
        head = self.get_output_embeddings()
        wanted = FewRowsHead if enabled else torch.nn.Linear
        if type(head) not in (torch.nn.Linear, FewRowsHead):
            raise ValueError(
                f"The LM head is a {type(head).__module__}.{type(head).__name__}, not a plain torch.nn.Linear, so "
                f"use_few_rows_head() cannot give it the few-rows product. If it is a PEFT adapter layer, merge the "
                f"adapter first (model = model.merge_and_unload()), then call use_few_rows_head()."
            )
        head.__class__ = wanted
        return self

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.backbone.set_output_embeddings(value)

    @property
    def max_positions(self) -> int | None:
        """How many positions the backbone can encode (None when unbounded, e.g. no such field in its config)."""
        return config_max_positions(self.config.backbone_config)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        logits_to_keep: int = 0,
        canvas_start: int | torch.Tensor | None = None,
        key_positions: torch.Tensor | None = None,
        canvas_block_length: int | None = None,
        cache: Cache | None = None,
        shift_logits: bool | None = None,
        **kwargs,
    ) -> DiffusionLMOutput:
        """Denoiser forward. `attention_mask` is a 2D padding mask over cached + current tokens (1 = real token)
        or a 4D mask [B, 1, Q, K] (bool: True = may attend; float: added to the attention scores).
        `logits_to_keep=n` returns aligned logits for the last n positions only (the LM head is the costly part for
        short canvases behind long prompts). `canvas_start` (int or [B], an index over cached + current positions):
        where the canvas begins, for `config.attention="causal_prefix"` models given a 2D mask. `key_positions` [K]:
        the sequence position of every key (cached + current) when the cache holds them out of order (the dual KV
        cache); the 2D mask is then in that same order and `position_ids` must be given. Only the causal-prefix mask
        depends on order (a bidirectional mask is the same in any order). `canvas_block_length`: the canvas of a
        causal-prefix model is block-causal in blocks of this length from `canvas_start` (what the decoder passes;
        none: the whole canvas attends to itself).
        `cache` is `past_key_values` under its transformers >= 5.24 name; give one of the two.
        `shift_logits=False` returns next-token logits instead (`logits[:, i]` scores token i + 1: the layout of a
        causal LM, which gated drafters use); default `config.shift_logits`.

        A gated drafter (`config.drafter`) reads the mask positions from `input_ids` (required): its adapter and mask
        embedding act there only, and a 2D (or no) mask becomes `gated_attention_mask` (clean positions causal, blind
        to masks)."""
        if cache is not None:
            if past_key_values is not None:
                raise ValueError("Give the KV cache as `cache=` or as `past_key_values=`, not both.")
            past_key_values = cache
        check_attention_implementation(self.backbone.config._attn_implementation)
        if self.drafter is not None:
            input_ids, inputs_embeds, attention_mask = self._gated_inputs(input_ids, inputs_embeds, attention_mask,
                                                                          past_key_values)
        query_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if key_positions is not None and position_ids is None:
            raise ValueError("key_positions= (keys out of order) needs explicit position_ids= for the queries.")
        if getattr(self.config, "attention", "bidirectional") == "causal_prefix" and (
            attention_mask is None or attention_mask.dim() == 2
        ):
            if canvas_start is None:
                raise ValueError(
                    "This model attends causally before its canvas (config.attention='causal_prefix'): pass "
                    "canvas_start= (index of the first canvas position, counting cached tokens) or a 4D mask."
                )
            if attention_mask is None:
                past = past_key_values.get_seq_length() if past_key_values is not None else 0
                ref = input_ids if input_ids is not None else inputs_embeds
                attention_mask = torch.ones(ref.shape[0], past + query_length, dtype=torch.long, device=ref.device)
            if position_ids is None:
                position_ids = position_ids_from_attention_mask(attention_mask, query_length)
            attention_mask = causal_prefix_mask(attention_mask, query_length, canvas_start, key_positions,
                                                canvas_block_length)
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            position_ids = position_ids_from_attention_mask(attention_mask, query_length)
        if attention_mask is not None and attention_mask.dim() == 4 and not attention_mask.is_floating_point():
            # transformers passes a 4D mask to the kernel as is; the eager kernel *adds* it to the scores, so a bool
            # mask would add 0/1 instead of blocking. An additive float mask means the same to every kernel.
            dtype = self.get_input_embeddings().weight.dtype
            attention_mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill(
                ~attention_mask.bool(), torch.finfo(dtype).min
            )
        shift = bool(self.config.shift_logits if shift_logits is None else shift_logits)
        # Aligned logits for the last n positions need the backbone's last n + 1 (hidden i-1 scores token i).
        backbone_keep = logits_to_keep + 1 if (shift and 0 < logits_to_keep < query_length) else logits_to_keep
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            logits_to_keep=backbone_keep,
            **{CACHE_NAME: past_key_values},
            **kwargs,
        )
        logits = out.logits
        if shift:
            if backbone_keep == logits_to_keep:  # the whole sequence: position 0 has no predecessor
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            else:
                logits = logits[:, :-1]
        return DiffusionLMOutput(
            logits=logits,
            cache=getattr(out, CACHE_NAME) if use_cache else None,
            hidden_states=out.hidden_states,
        )

    def _gated_inputs(self, input_ids, inputs_embeds, attention_mask, past_key_values):
        """A gated drafter's forward inputs: the gate set from the mask positions, the mask embedding in their place,
        and the gated 4D attention mask when a 2D (or no) mask was given."""
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("A gated drafter finds its mask positions in input_ids: pass input_ids, not inputs_embeds.")
        is_mask = input_ids == self.config.mask_token_id
        embeds = self.get_input_embeddings()(input_ids)
        self.drafter.set_gate(is_mask, embeds.dtype)
        if self.drafter.gate is not None:
            embeds = torch.where(is_mask[..., None], self.drafter.mask_embedding.to(embeds.dtype), embeds)
        if attention_mask is None or attention_mask.dim() == 2:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            if attention_mask is None:
                attention_mask = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long,
                                            device=input_ids.device)
            attention_mask = gated_attention_mask(is_mask, attention_mask, self.config.attention)
        return None, embeds, attention_mask

    def speculative_generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, *,
                             max_new_tokens: int = 256, draft_length: int = 4,
                             eos_token_id: int | list[int] | None = None, predraft: bool = False, streamer=None,
                             stop_strings: str | list[str] | None = None, tokenizer=None, stopping_criteria=None):
        """The base causal LM's greedy answers, drafted and verified in one forward per round (gated drafters only;
        `hf_dlm.drafter_dlm` explains the round). Returns a `SpeculativeOutput`: `sequences` (prompts as given,
        answers right-padded with pad after their EOS), `verify_forwards` (forwards per row), `accepted` (drafts kept
        per round), `proposed`, `new_tokens`, `nfe` (forwards of the whole batch) and `tokens_per_forward`.

        Args:
            input_ids / attention_mask: left-padded prompts.
            max_new_tokens: the budget per row, EOS included; prompt + budget must fit the model's positions.
            draft_length: masks per forward, so a round adds 1 to draft_length + 1 tokens.
            eos_token_id: stop ids; default `config.eos_token_id`.
            predraft: also draft for every outcome short of "all kept" (TiDAR's pre-drafting: (k + 1) * k masks per
                forward instead of k), so that a rejected draft does not leave the next round without drafts.
            streamer: a transformers streamer (`TextStreamer`, `TextIteratorStreamer`, ...; batch 1): the prompt,
                then the tokens each round decides.
            stop_strings / tokenizer, stopping_criteria: as in `diffusion_generate`: a row ends with the token that
                completes a stop string (checked after every round) and leaves the batch.
        """
        if self.drafter is None:
            raise ValueError(
                "speculative_generate drafts and verifies in one forward only on a gated drafter "
                "(DiffusionLM.from_causal_lm(model, tokenizer, drafter='gated_lora')). For this diffusion model, "
                "hf_dlm.speculative_generate(drafter=model, verifier=<its causal LM>, ...) drafts with it and verifies "
                "with the base in two forwards per round."
            )
        was_training = self.training
        self.eval()
        try:
            return gated_speculative_generate(self, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                                              draft_length=draft_length, eos_token_id=eos_token_id,
                                              predraft=predraft, streamer=streamer, stop_strings=stop_strings,
                                              tokenizer=tokenizer, stopping_criteria=stopping_criteria)
        finally:
            self.train(was_training)


def model_card_writer():
    """`hf_dlm.model_card.write_model_card` when the hf_dlm package is installed, else None.

    The card is hf_dlm's business (it uses huggingface_hub's ModelCard), and this file travels as remote code that
    imports only torch and transformers: it is looked up at run time, so that a checkpoint loaded where hf_dlm is
    not installed still saves (without a card)."""
    try:
        return importlib.import_module("hf_dlm.model_card").write_model_card
    except ImportError:
        return None


def unwrap_peft(model):
    """The model inside a PEFT wrapper (`get_base_model()`), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def config_max_positions(config) -> int | None:
    """The positions a causal LM config can encode, whatever the family calls the field (None: no such field)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def check_attention_implementation(name: str | None) -> None:
    if name is not None and name not in MASK_HONOURING_ATTENTION:
        raise ValueError(
            f"attn_implementation={name!r} is not supported by DiffusionLM: that kernel ignores custom attention "
            f"masks, so the model would silently attend causally or across padding. Load or adapt the model with "
            f"attn_implementation='sdpa' (fastest here) or 'eager'."
        )


__all__ = [
    "DiffusionLM",
    "DiffusionLMOutput",
    "DiffusionLMPreTrainedModel",
    "FewRowsHead",
    "causal_prefix_mask",
    "config_max_positions",
    "position_ids_from_attention_mask",
    "unwrap_peft",
]
