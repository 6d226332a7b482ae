"""Variable-length diffusion decoding: `DiffusionLM.diffusion_generate`.

Remote code: copied next to every saved checkpoint; imports only torch, transformers and `settings_dlm.py` (the
settings' table and validation, standard library only, so the CLI can check flags without torch).

One engine, three length strategies (docs/decoding.md has worked examples), each a small class below:
- `fixed`   `FixedLength`, LLaDA (github.com/ML-GSAI/LLaDA, generate.py): a canvas of `max_new_tokens` masks
            decoded in semi-autoregressive blocks; the tail fills with EOS. The baseline: its cost follows the budget.
- `grow`    `GrowLength`, dLLM-Var (github.com/maomaocun/dLLM-Var): the canvas starts as one block; a row whose
            canvas is fully decoded without an EOS gets another block; a row stops at its first EOS.
- `predict` `PredictLength`, a length bound read at the first step (this project's proposal; cf. DAEDAL): the first forward runs over prompt + `max_new_tokens` masks;
            p(EOS) at every position gives an upper bound on the answer's length; later steps run on that shorter
            canvas; a row that outgrows its bound continues as `grow`.
A strategy answers four questions through the hooks of `LengthStrategy`: how long every canvas starts, what the
first forward tells (`predict` sets its bound), which positions of the block may commit, and after each commit which
rows are done and which grow. `LENGTH_STRATEGY_CLASSES` maps `length_strategy` names to classes: a fourth strategy
is one class and one entry there.

Unmasking (which masks to commit per step): a per-block schedule from `steps` (LLaDA) and/or a confidence
`threshold` (Fast-dLLM, github.com/NVlabs/Fast-dLLM: commit every mask whose token probability clears it, at
least one per step). Committed tokens are never remasked.

KV cache (`use_cache=True`): dLLM-Var's scheme. The cache holds the prefix (prompt + finished blocks) except its
last token, the *anchor*; each forward runs [anchor | current block | rest of the canvas] against the cache. The
anchor is re-fed so that, with the AR shift, the block's first token is scored inside the same forward (Fast-dLLM
commits it from the previous forward instead). The forward that starts a block also re-encodes the block just
finished, and that is the KV kept for it: no extra forward per block. Approximation: cached keys/values never see
tokens committed later (measured in docs/decoding.md). Exact for `attention="causal_prefix"` models (block diffusion
with a causal context), whose context never attends to anything after it.

Dual KV cache (`use_cache="dual"`): Fast-dLLM's DualCache (github.com/NVlabs/Fast-dLLM, `generate_with_dual_cache`).
The block's first forward is the prefix cache's [anchor | block | rest]; its keys/values of the rest (the masks after
the block) are kept too, so the cache holds [prefix | suffix]. The block's later forwards run [anchor | block] only,
with their true position ids, attending to prefix, themselves and the cached suffix. A forward then costs the block,
not the canvas: what makes `fixed` and `predict` (whose canvases reach past the block) as cheap per forward as
`grow`. Approximation on top of the prefix cache's: within a block the suffix's keys/values do not see the block's
commits (also for causal-prefix models: their canvas attends to the block). Identical to the prefix cache at every
block-start forward; measured against uncached decoding in docs/decoding.md.

`cache_refresh="full"` (Fast-dLLM's refresh) makes every block's first forward re-encode the whole sequence instead
of the block just finished. And when `predict` cuts its canvas after the first forward, the cached prompt (which
attended to the whole budget of masks) is re-encoded by the next forward, whatever the refresh.

Batches: left-padded prompts; all rows work on the same block index (a row done with its block waits without
committing, which cannot change its tokens); finished rows leave the batch and the cache.

Reading order: `DiffusionGenerationConfig` (the settings), the output types, `DiffusionGenerationMixin` (argument
checks, then one `_Decoder` per call), tensor helpers, the length strategies, and `_Decoder`: its state, the canvas
bookkeeping, the forward (and the cache), choosing and committing tokens, per-row stopping, and the loop `run`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.cache_utils import DynamicCache
from transformers.utils import ModelOutput

from .generate_kwargs_dlm import generate_arguments, temperature_for
from .settings_dlm import (
    CACHE_MODES,
    LENGTH_STRATEGIES,
    SETTINGS,
    UNMASKING_RULES,
    cache_mode,
    check_loaded_token_ids,
    check_prompt_tensors,
    check_token_ids_in_vocabulary,
    num_blocks,
    refuse_unknown_settings,
    steps_per_block,
    token_id_list,
    validate_generation_settings,
)
from .stopping_dlm import RowStops, decided_length


class DiffusionGenerationConfig(GenerationConfig):
    r"""
    Settings of [`DiffusionLM.diffusion_generate`], saved as `generation_config.json`. Keyword arguments of
    `diffusion_generate` override them for one call.

    Args:
        max_new_tokens (`int`, defaults to 256):
            The budget: at most this many tokens are generated per row (EOS included). Never exceeded.
        length_strategy (`str`, defaults to `"predict"`):
            `"fixed"` (LLaDA: a canvas of `max_new_tokens` masks, tail filled with EOS), `"grow"` (dLLM-Var: one
            block at a time until EOS) or `"predict"` (bound the length from p(EOS) at the first step, then decode
            that canvas, growing if needed), or the name of a plug-in registered in `LENGTH_STRATEGY_CLASSES`.
        block_length (`int`, defaults to 32):
            Tokens per semi-autoregressive block. Masks are only committed inside the current block.
        steps (`int`, *optional*):
            Denoising steps for the whole budget, as in LLaDA: each block gets
            `steps / ceil(max_new_tokens / block_length)` steps and commits its masks evenly over them (earlier
            steps take the remainder). Must be a multiple of the number of blocks and at most `max_new_tokens`.
            `None` with `threshold=None` means one token per step (`steps = max_new_tokens`).
        threshold (`float` in (0, 1], *optional*, defaults to 0.9):
            Confidence-threshold parallel decoding (Fast-dLLM): every mask whose chosen token has probability
            >= threshold is committed; at least one per step, or at least the `steps` schedule when `steps` is set.
            `None` disables it.
        unmasking (`str`, defaults to `"low_confidence"`):
            How masks are ranked when the schedule (or the at-least-one rule) picks which to commit:
            `"low_confidence"` (probability of the chosen token; LLaDA), `"margin"` (top-1 minus top-2
            probability), `"entropy"` (lowest entropy first; Dream), `"random"` (uniform, LLaDA's `random`), or
            `"left_to_right"`: the leftmost masks first, and a mask is never committed while one to its left in the
            block stays masked, so threshold commits only extend the decided prefix. With a model that is not yet
            confident beyond the next token this keeps a later position from being filled before the text that
            leads to it (the root of doubled words such as "a force that that opposes").
        defer_repeats (`bool`, defaults to `False`):
            Do not commit, in one step, a token equal to the token its left neighbour commits in the same step; it
            stays masked and is predicted again next step, seeing that neighbour. Parallel decoding chooses
            positions independently, so two adjacent masks that both expect the same word both get it ("the water
            cycle cycle"): the token-repetition failure of non-autoregressive decoding (Gu et al. 2018, "Non-
            Autoregressive Neural Machine Translation"). Deferring, not banning: a real repeat still comes out, one
            step later.
        repetition_penalty (`float`, defaults to 1.0):
            CTRL's penalty (Keskar et al. 2019, the same rule as transformers' `RepetitionPenaltyLogitsProcessor`):
            the logit of every token already decided in the row (real prompt tokens and committed answer tokens;
            masks and padding do not count) is divided by it when positive and multiplied by it when negative,
            before tokens are chosen and confidences computed. EOS is exempt (unlike transformers): the chat template
            puts it in every prompt, and penalising it would argue against ending. 1.0 disables; > 1 discourages
            loops.
        temperature (`float`, defaults to 0.0):
            0 decodes greedily (argmax); > 0 samples from softmax(logits / temperature).
        top_k (`int`, *optional*) / top_p (`float`, *optional*):
            Restrict sampling to the k most likely tokens / the smallest set with cumulative probability >= top_p.
            They need `temperature > 0`: greedy decoding would ignore them, so that combination is refused.
        seed (`int`, *optional*):
            Seeds a `torch.Generator` for sampling and `unmasking="random"` (a `generator=` argument wins).
        predict_threshold (`float` in (0, 1), defaults to 0.5):
            `predict` only. The predicted answer length is the first canvas position whose p(EOS) reaches this
            value at the first step (with EOS-filled training targets, p(EOS) at position j estimates
            P(length <= j)); no such position means the whole budget.
        length_margin (`int`, defaults to 8):
            `predict` only. Safety margin added to the predicted length: canvas = predicted + 1 (the EOS) + margin,
            capped by `max_new_tokens`. Too short is repaired by growing; too long costs a few masks per forward.
        length_coverage (`float` in (0, 1), *optional*):
            `predict` only, a record: the probability that the bound (predicted + 1 + margin) covers the answer's
            length for which `predict_threshold` and `length_margin` were calibrated (`hf_dlm.calibration`,
            `hf-dlm calibrate`); reported with every output as `length_coverage`. None: not calibrated.
        use_cache (`bool` or `str`, defaults to `True`):
            KV cache (see the module docstring). `True` or `"prefix"`: the prompt and finished blocks are not
            recomputed (dLLM-Var). `"dual"`: also the canvas after the current block is cached at the block's first
            forward, and the block's other forwards run the block alone (Fast-dLLM's DualCache). `False`: none.
        cache_refresh (`str`, defaults to `"partial"`):
            What the first forward of a block re-encodes when a cache is on: `"partial"` (dLLM-Var) the block just
            finished (from its anchor on), `"full"` (Fast-dLLM) the whole sequence from the first prompt token, so
            every cached key/value sees the tokens committed since; it costs a full-length forward per block.
        output_history (`bool`, defaults to `False`):
            Return the canvas after every step in `history` (needs `return_dict_in_generate=True`).
        return_dict_in_generate (`bool`, defaults to `False`):
            Return a [`DiffusionGenerateOutput`] instead of the sequences tensor.
        mask_token_id / pad_token_id / eos_token_id / bos_token_id:
            Special tokens; filled from the model config. `eos_token_id` may be a list: any of them ends a row.
        do_sample (`bool`, derived):
            transformers' name for "decoding samples": `temperature > 0`, read from it, never stored apart (so the two
            cannot disagree). Written to `generation_config.json` and shown to transformers' pipelines, which
            otherwise add their own sampling default (`do_sample=True, temperature=0.7`) to every call. Given to the
            constructor or set, it picks the temperature as `generate(do_sample=...)` does: False is 0, True keeps a
            temperature > 0 or takes 1.0.
    """

    def __init__(self, **kwargs):
        # Like transformers' DiffusionGemmaGenerationConfig we do not call GenerationConfig.__init__: most of its
        # autoregressive flags (beams, repetition penalty, ...) mean nothing here and would be silently ignored.
        # Fields and defaults: settings_dlm.SETTINGS, the one table the CLI builds its flags from too.
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is not None:
            kwargs["temperature"] = temperature_for(do_sample, kwargs.get("temperature"), 0.0)
        for setting in SETTINGS:
            setattr(self, setting.name, kwargs.pop(setting.name, setting.default))
        # Metadata written by transformers.
        self._commit_hash = kwargs.pop("_commit_hash", None)
        self._from_model_config = kwargs.pop("_from_model_config", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        refuse_unknown_settings(kwargs)
        self.validate()

    def to_dict_own(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "transformers_version"}

    @classmethod
    def from_model_config(cls, model_config) -> DiffusionGenerationConfig:
        """Defaults with the special tokens of a `DiffusionLMConfig`."""
        config = cls(
            mask_token_id=model_config.mask_token_id,
            pad_token_id=model_config.pad_token_id,
            eos_token_id=model_config.eos_token_id,
            bos_token_id=model_config.bos_token_id,
        )
        config._from_model_config = True
        return config

    def to_diff_dict(self) -> dict:
        # GenerationConfig drops values equal to *its* defaults (temperature=1.0, ...), which are not ours: a
        # reloaded config would silently change. Write every field, and `do_sample`: transformers' pipelines read
        # this dict to see which settings the model sets, and add `do_sample=True` when it is missing.
        return self.to_dict() | {"do_sample": self.do_sample}

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    @do_sample.setter
    def do_sample(self, value: bool) -> None:
        self.temperature = temperature_for(value, None, self.temperature)

    @property
    def eos_token_ids(self) -> list[int]:
        return token_id_list(self.eos_token_id)

    @property
    def num_blocks(self) -> int:
        return num_blocks(self.max_new_tokens, self.block_length)

    @property
    def steps_per_block(self) -> int | None:
        return steps_per_block(self.max_new_tokens, self.block_length, self.steps, self.threshold)

    def validate(self, strict: bool = False, **unused) -> None:
        """Raise `ValueError` saying what to change (settings_dlm.validate_generation_settings: the checks live
        there). Nothing is clamped silently. `length_strategy` may name any registered strategy, plug-ins too."""
        validate_generation_settings(self.to_dict_own(), tuple(LENGTH_STRATEGY_CLASSES))

    def get_generation_mode(self, *args, **kwargs):
        raise NotImplementedError("DiffusionGenerationConfig drives diffusion_generate, not autoregressive modes.")


@dataclass
class DiffusionGenerateOutput(ModelOutput):
    """
    Args:
        sequences (`torch.LongTensor` [batch, prompt + generated]): prompts (as given, left padded) and answers;
            after a row's first EOS only pad.
        nfe (`int`): number of function evaluations (model forwards) of the whole call, the currency of speed.
        nfe_per_row (`torch.LongTensor` [batch]): forwards each row took part in (finished rows leave the batch).
        lengths (`torch.LongTensor` [batch]): answer tokens before the first EOS (all generated tokens if none).
        finished (`torch.BoolTensor` [batch]): the row produced an EOS within the budget.
        predicted_lengths (`torch.LongTensor` [batch]): `predict` only: the answer length read from p(EOS) at the
            first step (before `length_margin`); compare with `lengths` to measure the predictor's error.
        grew (`torch.BoolTensor` [batch]): `predict` only: the bound was too short and the row grew past it.
        bounds (`torch.LongTensor` [batch]): `predict` only: the canvas the bound gave each row, predicted length + 1
            + `length_margin`, at most the budget (the answer and its EOS fit when `lengths < bounds`).
        length_coverage (`float`): `predict` only: the coverage `predict_threshold` and `length_margin` were
            calibrated for (the `length_coverage` setting; None when they were not calibrated).
        history (`tuple[torch.LongTensor]`): with `output_history=True`, the whole batch's canvas after every step
            (masks shown as `mask_token_id`).
    """

    sequences: torch.LongTensor | None = None
    nfe: int | None = None
    nfe_per_row: torch.LongTensor | None = None
    lengths: torch.LongTensor | None = None
    finished: torch.BoolTensor | None = None
    predicted_lengths: torch.LongTensor | None = None
    grew: torch.BoolTensor | None = None
    bounds: torch.LongTensor | None = None
    length_coverage: float | None = None
    history: tuple[torch.LongTensor, ...] | None = None


@dataclass
class DiffusionStep:
    """What a `callback` sees after every denoising step (e.g. to show masks resolving live)."""

    step: int
    nfe: int
    block: int
    canvas: torch.LongTensor  # [batch, prompt + max_new_tokens], masks as mask_token_id, pad outside the canvas
    prompt_length: int
    finished: torch.BoolTensor  # [batch]


class DiffusionGenerationMixin:
    """`diffusion_generate` (and `generate`, the same decoder) for `DiffusionLM`."""

    def generate(self, inputs: torch.LongTensor | None = None, generation_config=None, **kwargs):
        """transformers' `generate` for this model (pipelines and code written for causal LMs call it): the arguments
        of `GenerationMixin.generate` translated for [`diffusion_generate`] by `generate_kwargs_dlm.generate_arguments`
        (`do_sample=False` is temperature 0, a plain `GenerationConfig` gives the fields it sets, `stop_strings` with
        `tokenizer=` and `stopping_criteria` end rows early, ...); what the decoder cannot honour (beam search,
        per-token scores, logits processors) is refused, saying what to do. Every `DiffusionGenerationConfig` field
        is taken by name too.

        On a gated drafter (`config.drafter`) it is `speculative_generate`, the base's greedy answers:
        `max_new_tokens` (or `max_length`), `draft_length`, `eos_token_id`, `streamer`, `stop_strings` (with
        `tokenizer`), `stopping_criteria` and `attention_mask` apply;
        it returns the sequences (the output object with `return_dict_in_generate=True`)."""
        if inputs is None:
            inputs = kwargs.pop("input_ids", None)
        if not isinstance(inputs, torch.Tensor):
            raise ValueError("generate needs the prompts as input_ids, a 2D LongTensor (tokenizer(..., "
                             "return_tensors='pt')); a diffusion LM does not generate from an empty prompt.")
        if getattr(self, "drafter", None) is not None:
            return self._generate_by_drafting(inputs, generation_config, kwargs)
        base = generation_config if isinstance(generation_config, DiffusionGenerationConfig) else None
        plain = None if generation_config is None or base is not None else generation_config.to_diff_dict()
        configured = (base or self._diffusion_defaults()).to_dict_own()
        args = generate_arguments(kwargs, plain, tuple(configured), configured, inputs.shape[-1])
        if args.copies > 1:  # num_return_sequences: transformers repeats each prompt the same way
            inputs = inputs.repeat_interleave(args.copies, dim=0)
            if args.call.get("attention_mask") is not None:
                args.call["attention_mask"] = args.call["attention_mask"].repeat_interleave(args.copies, dim=0)
        return self.diffusion_generate(inputs, generation_config=base, **args.call, **args.settings)

    def _generate_by_drafting(self, inputs, generation_config, kwargs):
        """`generate` on a gated drafter: the usual arguments that mean something for the base's greedy answer."""
        draft = {name: kwargs.pop(name) for name in ("draft_length", "predraft") if name in kwargs}
        plain = generation_config.to_diff_dict() if generation_config is not None else None
        configured = self._diffusion_defaults().to_dict_own()
        args = generate_arguments(kwargs, plain, tuple(configured), configured, inputs.shape[-1])
        # do_sample=False clears top_k / top_p (None): nothing to honour there
        settings = {k: v for k, v in args.settings.items() if not (k in ("top_k", "top_p") and v is None)}
        if settings.get("temperature") or args.copies > 1:
            raise ValueError("A gated drafter decodes its base's greedy answer: sampling is not supported "
                             "(do_sample=False, temperature 0, num_return_sequences=1).")
        if settings.get("pad_token_id", self.config.pad_token_id) == self.config.pad_token_id:
            settings.pop("pad_token_id", None)  # the model's own pad: what speculative_generate fills with anyway
        taken = {"temperature", "max_new_tokens", "eos_token_id", "return_dict_in_generate", "bos_token_id"}
        unmet = sorted(set(settings) - taken)
        passed = {"attention_mask", "streamer", "stop_strings", "tokenizer", "stopping_criteria"}
        unmet_calls = sorted(set(args.call) - passed)
        if unmet or unmet_calls:
            raise ValueError(
                f"generate on a gated drafter gives its base's greedy answer and takes max_new_tokens (or max_length), "
                f"draft_length, predraft, eos_token_id, pad_token_id (the model's, {self.config.pad_token_id}), "
                f"do_sample=False, streamer, stop_strings (with tokenizer), stopping_criteria and attention_mask; it "
                f"cannot honour {unmet + unmet_calls}."
            )
        budget = settings.get("max_new_tokens", configured["max_new_tokens"])
        calls = {name: value for name, value in args.call.items() if name != "attention_mask"}
        output = self.speculative_generate(inputs, args.call.get("attention_mask"), max_new_tokens=budget,
                                           eos_token_id=settings.get("eos_token_id"), **calls, **draft)
        return output if settings.get("return_dict_in_generate") else output.sequences

    def adjust_generation_fn(self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path,
                             cache_dir=None, force_download=False, proxies=None, local_files_only=False, token=None,
                             revision="main", subfolder="", **kwargs):
        """Called by `from_pretrained`: load `generation_config.json` as a `DiffusionGenerationConfig`, then refuse
        special token ids that disagree between it and config.json or exceed the vocabulary."""
        if generation_config is not None:
            self.generation_config = DiffusionGenerationConfig.from_dict(generation_config.to_dict())
        else:
            try:
                self.generation_config = DiffusionGenerationConfig.from_pretrained(
                    pretrained_model_name_or_path, cache_dir=cache_dir, force_download=force_download,
                    proxies=proxies, local_files_only=local_files_only, token=token, revision=revision,
                    subfolder=subfolder,
                )
            except OSError:  # no generation_config.json: defaults with the model config's special tokens
                self.generation_config = DiffusionGenerationConfig.from_model_config(self.config)
        check_loaded_token_ids(self, pretrained_model_name_or_path)

    def _diffusion_defaults(self) -> DiffusionGenerationConfig:
        """The model's generation config, or the defaults with its special tokens if it is not a diffusion one."""
        config = self.generation_config
        return config if isinstance(config, DiffusionGenerationConfig) else \
            DiffusionGenerationConfig.from_model_config(self.config)

    def _prepare_diffusion_config(self, generation_config, kwargs) -> DiffusionGenerationConfig:
        base = generation_config if generation_config is not None else self._diffusion_defaults()
        if not isinstance(base, DiffusionGenerationConfig):
            base = DiffusionGenerationConfig.from_model_config(self.config)
        config = copy.deepcopy(base)
        unknown = {k: v for k, v in kwargs.items() if k not in config.to_dict_own()}
        if unknown:
            raise ValueError(
                f"diffusion_generate got unknown arguments {sorted(unknown)}. Valid settings: "
                f"{sorted(config.to_dict_own())}."
            )
        for key, value in kwargs.items():
            setattr(config, key, value)
        for key in ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
            if getattr(config, key) is None:
                setattr(config, key, getattr(self.config, key, None))
        config.validate()
        if config.mask_token_id is None:
            raise ValueError("No mask_token_id: adapt the model with DiffusionLM.from_causal_lm or set config.mask_token_id.")
        if not config.eos_token_ids:
            raise ValueError("No eos_token_id: variable-length decoding needs one; set model.config.eos_token_id.")
        if config.pad_token_id is None:
            raise ValueError("No pad_token_id: set model.config.pad_token_id (batches and finished rows need it).")
        return config

    @torch.no_grad()
    def diffusion_generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        generation_config: DiffusionGenerationConfig | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[DiffusionStep], None] | None = None,
        streamer=None,
        stop_strings: str | list[str] | None = None,
        tokenizer=None,
        stopping_criteria=None,
        **kwargs,
    ) -> DiffusionGenerateOutput | torch.LongTensor:
        """Decode answers to left-padded prompts by masked diffusion, each row stopping at its own EOS.

        Args:
            input_ids (`torch.LongTensor` [batch, prompt]): prompts, left padded (`tokenizer.padding_side="left"`).
            attention_mask (`torch.LongTensor` [batch, prompt], *optional*): 1 for real tokens, 0 for padding.
            generation_config: a [`DiffusionGenerationConfig`]; defaults to `model.generation_config`.
            generator: a `torch.Generator` for reproducible sampling (else `seed`, else torch's global RNG).
            callback: called with a [`DiffusionStep`] after every denoising step.
            streamer: a transformers streamer (`TextStreamer`, `TextIteratorStreamer`, `TextDiffusionStreamer`, or
                any object with `put` / `end`), batch size 1 as in transformers' `generate`. It gets the prompt, then
                each token once it is final (the answer's decided prefix: every position before it committed; up to
                and including the first EOS), and `end()` when decoding stops (also when it fails, so a thread
                reading a `TextIteratorStreamer` never waits forever). A streamer with `put_draft` (transformers'
                `TextDiffusionStreamer`) also gets, after every step, the undecided rest of the canvas, masks
                included. See [`StreamRelay`].
            stop_strings / tokenizer: a row ends once its decided prefix (every position before committed) contains
                one of these strings, as decoded by `tokenizer`; its answer keeps the token that completes the stop
                string and ends there, as in transformers' `generate`. The row leaves the batch at that step, so
                the forwards after it are saved. See `stopping_dlm.py`.
            stopping_criteria: transformers `StoppingCriteria` (or callables `(input_ids, scores) -> bool`), asked
                after every newly decided token with `[1, prompt + decided prefix]` and `scores=None`; True ends
                the row there.
            kwargs: any field of [`DiffusionGenerationConfig`], overriding it for this call.

        Returns:
            `sequences` (`torch.LongTensor`), or a [`DiffusionGenerateOutput`] with `return_dict_in_generate=True`.
        """
        if getattr(self, "drafter", None) is not None:
            raise ValueError(
                "This model is a gated drafter for its base (config.drafter): it decodes with "
                "model.speculative_generate(input_ids, max_new_tokens=..., draft_length=k) (or model.generate), "
                "which gives the base's greedy answer; its masks are trained to draft, not to denoise a canvas."
            )
        config = self._prepare_diffusion_config(generation_config, kwargs)
        input_ids, attention_mask = self._check_prompts(input_ids, attention_mask, config)
        if generator is None and config.seed is not None:
            generator = torch.Generator(device=input_ids.device).manual_seed(config.seed)
        stops = None
        if stop_strings or stopping_criteria:
            stops = RowStops([row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)],
                             config.mask_token_id, config.eos_token_ids, config.pad_token_id, stop_strings, tokenizer,
                             stopping_criteria)
        relay = None
        if streamer is not None:
            if input_ids.shape[0] != 1:
                raise ValueError(
                    f"streamer= streams one answer: pass a batch of 1 prompt (got {input_ids.shape[0]}), as with "
                    f"transformers' generate. For batches, callback= sees every row's canvas after each step."
                )
            relay = StreamRelay(streamer, input_ids[0][attention_mask[0].bool()], config.mask_token_id,
                                config.eos_token_ids, config.pad_token_id, callback)
            callback = relay
        try:
            output = _Decoder(self, config, input_ids, attention_mask, generator, callback, stops or None).run()
        except BaseException:
            if relay is not None:
                relay.streamer.end()  # decoding failed or was stopped: a reader of the streamer stops waiting
            raise
        if relay is not None:
            relay.finish(output.sequences[0, input_ids.shape[1] :])
        return output if config.return_dict_in_generate else output.sequences

    def _check_prompts(self, input_ids, attention_mask, config):
        check_prompt_tensors(input_ids, attention_mask)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2D LongTensor [batch, prompt_length] (tokenizer(..., return_tensors='pt')).")
        if input_ids.shape[1] == 0:
            raise ValueError("The prompt is empty: with the AR shift position 0 is never predicted; start with BOS or text.")
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(input_ids.device).long()
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}.")
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("A prompt row has no real token (attention_mask all 0): every row needs at least one.")
        if (attention_mask[:, :-1] > attention_mask[:, 1:]).any():
            raise ValueError(
                "Prompts must be left padded (padding before the text): set tokenizer.padding_side = 'left'."
            )
        vocab = self.get_input_embeddings().weight.shape[0]
        check_token_ids_in_vocabulary(config.to_dict_own(), vocab, "diffusion_generate got",
                                      "pass ids of this model's tokenizer")
        real = input_ids[attention_mask.bool()]
        if real.numel() and (real.min() < 0 or real.max() >= vocab):
            raise ValueError(f"input_ids contain ids outside the vocabulary [0, {vocab}): wrong tokenizer for this model?")
        if (real == config.mask_token_id).any():
            raise ValueError(
                f"The prompt contains the mask token (id {config.mask_token_id}); the decoder would treat it as a "
                f"position to fill. Remove it from the prompt text."
            )
        limit = self.max_positions
        if limit is not None and input_ids.shape[1] + config.max_new_tokens > limit:
            raise ValueError(
                f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({config.max_new_tokens}) exceeds the "
                f"model's {limit} positions: shorten the prompt or lower max_new_tokens."
            )
        return input_ids, attention_mask


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of `cache` (transformers 5's `crop` takes minus the excess)."""
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)


def _drop_cache_span(cache: DynamicCache, start: int, end: int) -> None:
    """Remove positions [start, end) of every layer of `cache` (the dual cache cuts the current block out of the
    block-start forward's keys/values, keeping what lies before and after it)."""
    if end <= start:
        return
    for layer in cache.layers:
        if not hasattr(layer, "keys") or layer.keys is None or not getattr(layer, "is_initialized", True):
            continue
        if type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(
                f"use_cache='dual' needs full-length cache layers; this model's cache has a {type(layer).__name__} "
                f"(e.g. sliding-window attention). Use use_cache=True (the prefix cache) with it."
            )
        layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., end:, :]], dim=-2)
        layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., end:, :]], dim=-2)


def first_true(flags: torch.Tensor, default: int | torch.Tensor) -> torch.LongTensor:
    """Index of the first True along the last dim of `flags` [rows, n]; `default` for rows without one."""
    default = torch.as_tensor(default, device=flags.device).expand(flags.shape[0])
    return torch.where(flags.any(-1), flags.float().argmax(-1), default)


def apply_repetition_penalty(
    logits: torch.Tensor, ids: torch.Tensor, decided: torch.Tensor, penalty: float, exempt: torch.Tensor
) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019) on `logits` [rows, q, vocab]: every token that occurs in
    `ids` [rows, n] where `decided` is True gets its logit divided by `penalty` if positive, multiplied if negative.
    Tokens in `exempt` (the EOS ids) are left alone: the chat template puts EOS in every prompt, and a penalty on it
    would argue against ending, which a variable-length decoder must not do."""
    counts = torch.zeros(ids.shape[0], logits.shape[-1], dtype=torch.long, device=logits.device)
    counts.scatter_add_(1, ids, decided.long())
    seen = counts > 0
    seen[:, exempt] = False
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen[:, None, :], penalised, logits)


# ----------------------------------------------------------------------------------------------- length strategies
class LengthStrategy(ABC):
    """How long each row's canvas is and when a row is done: the part of decoding that `fixed`, `grow` and
    `predict` do differently. Everything else (forwards, the cache, choosing and committing tokens) is `_Decoder`'s.

    The decoder makes one instance per `diffusion_generate` call, passing itself, and calls the hooks in this order:

    1. `initial_length()`, once: every row's canvas starts as this many masks.
    2. `after_first_forward(rows, logits)`, once, with the first forward's logits over the whole canvas.
    3. Every step: `may_commit(rows, start, end)` before committing masks in the current block, then
       `after_commit(rows)`, which says which rows are done (and may give the others a longer canvas).
    4. `output_fields()`, once: the strategy's own fields of `DiffusionGenerateOutput`.

    `rows` are the indices of the active rows (finished rows have left the batch); positions are canvas positions
    (0 = the first answer token). What strategies may use of the decoder: `budget`, `block_length`, `config`,
    `mask_id`, `eos_ids`, `canvas(rows)`, `canvas_len` and `resize_canvas(rows, lengths)`.
    """

    def __init__(self, decoder: _Decoder):
        self.decoder = decoder

    @abstractmethod
    def initial_length(self) -> int:
        """Canvas length (masks) of every row before the first forward, at most `decoder.budget`."""

    def after_first_forward(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        """Read the first forward's logits [rows, canvas, vocab] (the canvas from position 0) before any commit.
        Default: nothing to read (only `predict` looks)."""
        return None

    def may_commit(self, rows: torch.Tensor, start: int, end: int) -> torch.BoolTensor | None:
        """Which positions in [start, end) of the current block may commit this step, [rows, end - start];
        None: every mask may."""
        return None

    @abstractmethod
    def after_commit(self, rows: torch.Tensor) -> torch.BoolTensor:
        """Which of `rows` are done [rows] after this step's commits; may resize the canvases of the others."""

    def output_fields(self) -> dict:
        """Fields of `DiffusionGenerateOutput` this strategy fills (e.g. `predicted_lengths`)."""
        return {}


class FixedLength(LengthStrategy):
    """LLaDA: the canvas is the whole budget, decoded block by block; the tail fills with EOS (stripped from the
    output). A row is done when no mask is left."""

    def initial_length(self) -> int:
        return self.decoder.budget

    def after_commit(self, rows: torch.Tensor) -> torch.BoolTensor:
        decoder = self.decoder
        return ~(decoder.canvas(rows) == decoder.mask_id).any(-1)


class GrowLength(LengthStrategy):
    """dLLM-Var: the canvas starts as one block; a row fully decoded without an EOS gets another block (up to the
    budget); a row is done once it has an EOS with no mask before it, or fills the budget."""

    def initial_length(self) -> int:
        return min(self.decoder.block_length, self.decoder.budget)

    def may_commit(self, rows: torch.Tensor, start: int, end: int) -> torch.BoolTensor:
        # Positions after a row's first committed EOS are discarded from the answer: never spend a commit there
        # (a model trained with EOS fill is most confident about exactly those positions).
        decoder = self.decoder
        canvas = decoder.canvas(rows)[:, :end]
        first_eos = first_true(torch.isin(canvas, decoder.eos_ids), end)
        position = torch.arange(start, end, device=canvas.device)
        return position[None, :] < first_eos[:, None]

    def after_commit(self, rows: torch.Tensor) -> torch.BoolTensor:
        decoder = self.decoder
        canvas = decoder.canvas(rows)
        canvas_len = decoder.canvas_len[rows]
        index = torch.arange(decoder.budget, device=canvas.device)
        is_eos = torch.isin(canvas, decoder.eos_ids) & (index[None, :] < canvas_len[:, None])
        is_mask = canvas == decoder.mask_id
        first_eos = first_true(is_eos, decoder.budget)
        masks_before_eos = (is_mask & (index[None, :] < first_eos[:, None])).any(-1)
        all_decoded = ~is_mask.any(-1)
        done = (is_eos.any(-1) & ~masks_before_eos) | (all_decoded & (canvas_len >= decoder.budget))
        grow = all_decoded & ~done
        if grow.any():
            grown = rows[grow]
            decoder.resize_canvas(grown, (decoder.canvas_len[grown] + decoder.block_length).clamp(max=decoder.budget))
        return done


class PredictLength(GrowLength):
    """A length bound from the first step (this project's proposal; cf. DAEDAL): the first forward sees the whole budget as masks; with EOS-filled training targets,
    p(EOS) at canvas position j estimates P(length <= j), so the first position where it reaches
    `predict_threshold` is the predicted length. The canvas is cut to predicted + 1 (the EOS) + `length_margin`
    (at most the budget); a row that fills it without an EOS grows as in `GrowLength`."""

    def __init__(self, decoder: _Decoder):
        super().__init__(decoder)
        self.predicted_lengths: torch.LongTensor | None = None
        self.bound: torch.LongTensor | None = None

    def initial_length(self) -> int:
        return self.decoder.budget

    def after_first_forward(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        decoder = self.decoder
        first = predicted_lengths(eos_probabilities(logits, decoder.eos_ids), decoder.config.predict_threshold)
        self.predicted_lengths = first.clone()
        self.bound = length_bound(first, decoder.config.length_margin, decoder.budget)
        decoder.resize_canvas(rows, self.bound)

    def output_fields(self) -> dict:
        return {"predicted_lengths": self.predicted_lengths, "grew": self.decoder.canvas_len > self.bound,
                "bounds": self.bound, "length_coverage": self.decoder.config.length_coverage}


def eos_probabilities(logits: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """p(EOS) [rows, canvas] from the first forward's logits [rows, canvas, vocab] (any of the EOS ids)."""
    return logits.softmax(-1)[..., eos_ids].sum(-1)


def predicted_lengths(p_eos: torch.Tensor, predict_threshold: float) -> torch.LongTensor:
    """`predict`'s length: the first canvas position whose p(EOS) reaches the threshold; the canvas length if none."""
    return first_true(p_eos >= predict_threshold, p_eos.shape[-1])


def length_bound(predicted: torch.Tensor, length_margin: int, budget: int) -> torch.LongTensor:
    """`predict`'s canvas: predicted length + 1 (the EOS) + margin, at most the budget."""
    return (predicted + 1 + length_margin).clamp(max=budget)


# `length_strategy` name -> class. The built-in names are settings_dlm.LENGTH_STRATEGIES (what the CLI offers);
# DiffusionGenerationConfig.validate accepts every name here, so a plug-in strategy is a class and an entry.
LENGTH_STRATEGY_CLASSES: dict[str, type[LengthStrategy]] = {
    "fixed": FixedLength,
    "grow": GrowLength,
    "predict": PredictLength,
}


# ----------------------------------------------------------------------------------------------- the decoder
class StreamRelay:
    """Feeds a transformers streamer from the decoder's steps (a `callback`), for one row.

    Diffusion commits tokens anywhere in the block, so a token is *final* for streaming only when every position
    before it is committed too: the decided prefix grows, and only its new tokens are `put` (each once, in order,
    the first EOS included, nothing after it). `put_draft` (when the streamer has it, as transformers'
    `TextDiffusionStreamer`) gets the rest of the canvas after the decided prefix, masks included, after every
    step: the streamer shows final text followed by the draft, as DiffusionGemma's `generate` does per block.
    """

    def __init__(self, streamer, prompt: torch.Tensor, mask_id: int, eos_ids: list[int], pad_id: int,
                 callback: Callable[[DiffusionStep], None] | None = None):
        self.streamer, self.mask_id, self.eos_ids, self.pad_id = streamer, mask_id, set(eos_ids), pad_id
        self.callback = callback
        self.sent = 0  # answer tokens already put
        self.drafts = hasattr(streamer, "put_draft")
        streamer.put(prompt.cpu())  # transformers streamers skip it with skip_prompt=True

    def decided(self, answer: list[int]) -> list[int]:
        """The final prefix of `answer`: up to the first mask, cut after the first EOS, never into the padding past
        a canvas (a row ended by a stop string). It only grows, so the scan starts where the tokens already put
        end."""
        return answer[: decided_length(answer, self.mask_id, self.eos_ids, self.pad_id, self.sent)]

    def __call__(self, step: DiffusionStep) -> None:
        if self.callback is not None:
            self.callback(step)
        answer = step.canvas[0, step.prompt_length :].tolist()
        final = self.decided(answer)
        if len(final) > self.sent:
            self.streamer.put(torch.tensor(final[self.sent :]))
            self.sent = len(final)
        if self.drafts and not (final and final[-1] in self.eos_ids):
            rest = answer[self.sent :]
            if self.pad_id not in self.eos_ids and self.pad_id in rest:
                rest = rest[: rest.index(self.pad_id)]  # past the canvas
            self.streamer.put_draft(torch.tensor(rest))

    def finish(self, answer: torch.Tensor) -> None:
        """Put what the steps did not (the output's answer, up to its first EOS), then `end()`."""
        tokens = self.decided([t for t in answer.tolist() if t != self.pad_id or t in self.eos_ids])
        if len(tokens) > self.sent:
            self.streamer.put(torch.tensor(tokens[self.sent :]))
            self.sent = len(tokens)
        self.streamer.end()


class _Decoder:
    """State of one `diffusion_generate` call. Buffers are full-batch; forwards run on the active rows only.

    `seq` [batch, prompt + budget] holds the left-padded prompts, then each row's canvas: `canvas_len[row]`
    positions of tokens and masks, pad after it. `block` is the index of the current block (the same for all
    rows). The length strategy decides `canvas_len` and when a row is done; this class does everything else.
    """

    def __init__(self, model, config: DiffusionGenerationConfig, input_ids, attention_mask, generator, callback,
                 stops: RowStops | None = None):
        self.model, self.config, self.generator, self.callback = model, config, generator, callback
        self.stops = stops
        batch, self.prompt_length = input_ids.shape
        self.budget = config.max_new_tokens
        self.block_length = config.block_length
        device = input_ids.device
        self.device = device
        self.mask_id = config.mask_token_id
        self.pad_id = config.pad_token_id
        self.eos_ids = torch.tensor(config.eos_token_ids, device=device)
        self.causal_prefix = getattr(model.config, "attention", "bidirectional") == "causal_prefix"
        self.length_strategy = LENGTH_STRATEGY_CLASSES[config.length_strategy](self)

        width = self.prompt_length + self.budget
        self.seq = torch.full((batch, width), self.pad_id, dtype=torch.long, device=device)
        self.seq[:, : self.prompt_length] = torch.where(attention_mask.bool(), input_ids, self.pad_id)
        self.prompt_mask = attention_mask
        self.canvas_len = torch.zeros(batch, dtype=torch.long, device=device)
        start = torch.full_like(self.canvas_len, self.length_strategy.initial_length())
        self.resize_canvas(torch.arange(batch, device=device), start)

        self.active = torch.arange(batch, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.nfe = 0
        self.nfe_per_row = torch.zeros(batch, dtype=torch.long, device=device)
        self.block = 0
        self.step_in_block = 0
        self.step = 0
        self.history: list[torch.Tensor] = []
        self.cache_mode = cache_mode(config.use_cache)  # "prefix", "dual" or None
        if self.cache_mode == "dual" and getattr(getattr(model, "backbone", model).config, "is_causal", False):
            raise ValueError(
                "use_cache='dual' stores the keys after the current block before the block's own, and this backbone "
                "attends causally (config.is_causal=True), which reads key order as position order. Use "
                "use_cache=True (the prefix cache) with a causal backbone."
            )
        self.cache = DynamicCache() if self.cache_mode else None
        self.cached = 0  # prefix positions held by the cache (same for every active row)
        self.suffix = (0, 0)  # dual cache: the positions [start, end) held after the prefix
        self.stale = False  # the cache was encoded against a canvas that no longer exists: re-encode from 0

        # Tokens the decoder must never write: the mask itself, and a dedicated pad (it only fills after EOS).
        banned = [self.mask_id]
        if self.pad_id not in config.eos_token_ids:
            banned.append(self.pad_id)
        self.banned = torch.tensor(banned, device=device)

    # ----------------------------------------------------------------- canvas bookkeeping
    def canvas(self, rows: torch.Tensor) -> torch.LongTensor:
        """The answer region of `rows` [rows, budget] (a copy): tokens and masks, pad past each row's canvas."""
        return self.seq[rows, self.prompt_length :]

    def resize_canvas(self, rows: torch.Tensor, new_len: torch.Tensor) -> None:
        """Set the canvas length of `rows`: new positions become masks, positions past the end become pad."""
        index = torch.arange(self.budget, device=self.device)[None, :]
        canvas = self.canvas(rows)
        canvas = torch.where(index >= self.canvas_len[rows, None], self.mask_id, canvas)
        canvas = torch.where(index >= new_len[:, None], self.pad_id, canvas)
        self.seq[rows, self.prompt_length :] = canvas
        self.canvas_len[rows] = new_len

    def _attention(self, rows: torch.Tensor, end: int) -> torch.Tensor:
        """2D mask over positions [0, end): the prompt's padding mask, then 1 inside each row's canvas."""
        index = torch.arange(end - self.prompt_length, device=self.device)
        canvas = (index[None, :] < self.canvas_len[rows, None]).long()
        return torch.cat([self.prompt_mask[rows], canvas], dim=1)

    # ----------------------------------------------------------------- the forward
    def _forward(self, window_start: int, window_end: int) -> torch.Tensor:
        """Logits for positions [window_start, window_end) of the active rows (one NFE); with the dual cache,
        inside a block, only up to the block's end (the canvas after it is read from the cache)."""
        if self.cache_mode == "dual" and self.step_in_block > 0 and not self.stale:
            return self._forward_block_only(window_start, window_end)
        rows = self.active
        if self.cache is not None:
            if self.stale or (self.config.cache_refresh == "full" and self.step_in_block == 0):
                # Fast-dLLM's refresh: the block's first forward re-encodes the whole sequence, so every cached
                # key/value is recomputed with the tokens committed since (a full-length forward per block).
                self.cache, self.cached, self.suffix, self.stale = DynamicCache(), 0, (0, 0), False
            elif self.cache_mode == "dual":
                self._drop_suffix()  # the block starts: the canvas after it is encoded afresh below
            inputs = self.seq[rows, self.cached : window_end]
        else:
            inputs = self.seq[rows, :window_end]
        extra = {}
        if self.causal_prefix:
            # The context (prompt + finished blocks, the anchor included) attends causally, the canvas from the
            # current block on attends to everything.
            extra["canvas_start"] = self.prompt_length + self.block * self.block_length
        out = self.model(
            input_ids=inputs,
            attention_mask=self._attention(rows, window_end),
            past_key_values=self.cache,
            use_cache=self.cache is not None,
            logits_to_keep=window_end - window_start,
            **extra,
        )
        self._count_forward(rows)
        if self.cache is not None:
            # Keep the prefix before the current block's anchor: [prompt | finished blocks] minus its last token.
            keep = self.prompt_length + self.block * self.block_length - 1
            if self.cache_mode == "dual":
                # Fast-dLLM's DualCache: also keep the canvas after the block, [block end, window end), as encoded
                # by this block-start forward; the cache becomes [prefix | suffix] and inner steps run the block.
                block_end = min(keep + 1 + self.block_length, window_end)
                _drop_cache_span(self.cache, keep, block_end)
                self.suffix = (block_end, window_end)
            else:
                crop_cache(self.cache, keep)
            self.cached = keep
        return self._clean(out.logits)

    def _forward_block_only(self, window_start: int, window_end: int) -> torch.Tensor:
        """Dual cache, inside a block: run [anchor | block] only, attending to the cached prefix, itself and the
        cached canvas after the block (encoded at the block start: those positions are masks that no step of this
        block changes, but their keys/values saw the block as it was then).

        The cache holds [prefix | suffix] and the block is appended after them, so the sequence order is lost:
        the block gets its true positions explicitly (RoPE and learned position embeddings are applied from
        `position_ids` when keys are written, so a key's slot in the cache does not matter) and the padding mask
        is given in cache order (a bidirectional mask means the same in any order; a causal-prefix one is built
        from `key_positions`)."""
        rows = self.active
        keep = self.cached
        suffix_start, suffix_end = self.suffix
        # Rows may have shrunk since the block start (`predict` cuts its canvas after the first forward): the part of
        # the suffix past every canvas is never attended again, so drop it (it is last in the cache).
        live_end = max(min(suffix_end, window_end), suffix_start)
        if live_end < suffix_end:
            self.cache.crop(live_end - suffix_end)
            self.suffix = (suffix_start, live_end)
            suffix_end = live_end
        block_end = min(keep + 1 + self.block_length, window_end)
        in_order = self._attention(rows, max(suffix_end, block_end))  # true order, [0, max end)
        positions = (in_order.cumsum(-1) - 1).clamp(min=0)
        order = torch.cat([
            torch.arange(keep, device=self.device),
            torch.arange(suffix_start, suffix_end, device=self.device),
            torch.arange(keep, block_end, device=self.device),
        ])
        extra = {}
        if self.causal_prefix:
            extra = {"canvas_start": keep + 1, "key_positions": order}
        out = self.model(
            input_ids=self.seq[rows, keep:block_end],
            attention_mask=in_order[:, order],
            position_ids=positions[:, keep:block_end],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=block_end - window_start,
            **extra,
        )
        self._count_forward(rows)
        self.cache.crop(-(block_end - keep))  # back to [prefix | suffix]
        return self._clean(out.logits)

    def _drop_suffix(self) -> None:
        """Crop the dual cache back to its prefix (the suffix is last in it)."""
        crop_cache(self.cache, self.cached)
        self.suffix = (self.cached, self.cached)

    def _count_forward(self, rows: torch.Tensor) -> None:
        self.nfe += 1
        self.nfe_per_row[rows] += 1

    def _clean(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        logits[..., self.banned] = -torch.inf
        return logits

    # ----------------------------------------------------------------- choosing tokens
    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens x0, their probability, and the ranking score of `unmasking`."""
        config = self.config
        probs = logits.softmax(-1)
        if config.temperature == 0:
            x0 = logits.argmax(-1)
        else:
            scaled = logits / config.temperature
            if config.top_k is not None:
                kth = scaled.topk(min(config.top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
                scaled = scaled.masked_fill(scaled < kth, -torch.inf)
            if config.top_p is not None:
                sorted_logits, order = scaled.sort(-1, descending=True)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                drop = cumulative - sorted_logits.softmax(-1) >= config.top_p  # keep the token that crosses top_p
                scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -torch.inf)
            flat = scaled.softmax(-1).reshape(-1, scaled.shape[-1])
            x0 = torch.multinomial(flat, 1, generator=self.generator).view(scaled.shape[:-1])
        p_x0 = probs.gather(-1, x0[..., None]).squeeze(-1)
        if config.unmasking == "low_confidence":
            score = p_x0
        elif config.unmasking == "margin":
            top2 = probs.topk(2, dim=-1).values
            score = top2[..., 0] - top2[..., 1]
        elif config.unmasking == "entropy":
            score = (probs * probs.clamp_min(1e-12).log()).sum(-1)  # negative entropy: higher = surer
        elif config.unmasking == "left_to_right":
            score = -torch.arange(x0.shape[-1], device=x0.device, dtype=probs.dtype).expand(x0.shape)
        else:
            score = torch.rand(x0.shape, generator=self.generator, device=x0.device)
        return x0, p_x0, score

    def _commit(self, logits: torch.Tensor, window_start: int) -> None:
        """Commit tokens in the current block of every active row."""
        rows = self.active
        block_start = self.prompt_length + self.block * self.block_length
        # The window may end inside the block: past every active row's canvas (a `predict` bound).
        block_end = min(block_start + self.block_length, window_start + logits.shape[1])
        block_logits = logits[:, block_start - window_start : block_end - window_start]
        if self.config.repetition_penalty != 1.0:
            # Decided: the real prompt tokens, earlier blocks, and what this block has committed so far.
            decided = torch.cat(
                [self.prompt_mask[rows].bool(), self.seq[rows, self.prompt_length : block_end] != self.mask_id], dim=1
            )
            block_logits = apply_repetition_penalty(
                block_logits, self.seq[rows, :block_end], decided, self.config.repetition_penalty, self.eos_ids
            )
        x0, p_x0, score = self._sample(block_logits)
        current = self.seq[rows, block_start:block_end]
        is_mask = current == self.mask_id
        start, end = block_start - self.prompt_length, block_end - self.prompt_length  # as canvas positions
        allowed = self.length_strategy.may_commit(rows, start, end)
        if allowed is not None:
            is_mask &= allowed
        remaining = is_mask.sum(-1)

        # How many at least: the LLaDA schedule spreads a block's masks evenly over its steps (earlier steps take
        # the remainder), i.e. ceil(remaining / steps left); with only a threshold, one (Fast-dLLM).
        steps = self.config.steps_per_block
        if steps is None:
            minimum = (remaining > 0).long()
        else:
            steps_left = max(steps - self.step_in_block, 1)
            minimum = torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")
        score = score.masked_fill(~is_mask, -torch.inf)
        rank = score.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)  # 0 = best; ties: leftmost
        commit = is_mask & (rank < minimum[:, None])
        if self.config.threshold is not None:
            commit |= is_mask & (p_x0 >= self.config.threshold)
        if self.config.defer_repeats:
            # A row's first commit never has a committing left neighbour, so every row still commits something.
            repeat = commit[:, 1:] & commit[:, :-1] & (x0[:, 1:] == x0[:, :-1])
            commit[:, 1:] &= ~repeat
        if self.config.unmasking == "left_to_right":
            # Only the decided prefix grows: drop commits that lie right of a mask staying masked.
            commit &= (is_mask & ~commit).long().cumsum(-1) == 0
        self.seq[rows, block_start:block_end] = torch.where(commit, x0, current)

    # ----------------------------------------------------------------- stopping rows
    def _update_rows(self) -> None:
        """After a commit: the length strategy says which rows are done (and grows others); done rows leave the
        batch and the cache."""
        rows = self.active
        done = self.length_strategy.after_commit(rows)
        if self.stops is not None:
            # A stop string or criterion in a row's decided prefix ends the row: its canvas ends after the stopping
            # token (the rest becomes padding), and it leaves the batch like a row that reached EOS.
            keep = self.stops.check(rows, self.canvas(rows))
            stopped = keep >= 0
            if stopped.any():
                self.resize_canvas(rows[stopped], keep[stopped])
                done = done | stopped
        self.finished[rows[done]] = True
        if done.any():
            keep = ~done
            self.active = rows[keep]
            if self.cache is not None:
                if self.cache.get_seq_length() > 0:
                    self.cache.batch_select_indices(keep.nonzero().squeeze(-1))
                else:
                    # An empty cache (a one-token prompt is all anchor) still carries the old batch size, and
                    # transformers' batch_select_indices skips empty layers: start a fresh one instead.
                    self.cache = DynamicCache()

    def _block_done(self) -> bool:
        rows = self.active
        block_start = self.prompt_length + self.block * self.block_length
        block_end = block_start + self.block_length
        return not (self.seq[rows, block_start:block_end] == self.mask_id).any()

    # ----------------------------------------------------------------- the loop
    def run(self) -> DiffusionGenerateOutput:
        while self.active.numel():
            self.advance()
            self._report()
        return self._output()

    def advance(self) -> torch.Tensor:
        """One denoising step of the active rows: a forward, the strategy's first-step hook, commits, per-row
        stopping and growth, the block index. Returns the step's logits."""
        block_start = self.prompt_length + self.block * self.block_length
        window_end = self.prompt_length + int(self.canvas_len[self.active].max())
        logits = self._forward(block_start, window_end)
        if self.step == 0:
            before = self.canvas_len.clone()
            self.length_strategy.after_first_forward(self.active, logits)
            # `predict` cut the canvas: the cached prompt was encoded attending to the whole budget of masks,
            # a canvas no later forward sees. Re-encode it with the next forward (no extra NFE; that forward
            # spans prompt + bound once). Measured: without this, cached `predict` agreed with uncached decoding
            # on 8 of 16 toy prompts, with it on 14 (see docs/decoding.md).
            self.stale = self.cache is not None and not torch.equal(before, self.canvas_len)
        self._commit(logits, block_start)
        self.step += 1
        self.step_in_block += 1
        self._update_rows()
        if self.active.numel() and self._block_done():
            self.block += 1
            self.step_in_block = 0
        return logits

    def _report(self) -> None:
        if not (self.config.output_history or self.callback):
            return
        snapshot = self.seq.clone()
        if self.config.output_history:
            self.history.append(snapshot)
        if self.callback is not None:
            self.callback(DiffusionStep(self.step, self.nfe, self.block, snapshot, self.prompt_length, self.finished.clone()))

    def _output(self) -> DiffusionGenerateOutput:
        answer = self.seq[:, self.prompt_length :]
        index = torch.arange(self.budget, device=self.device)[None, :]
        inside = index < self.canvas_len[:, None]
        is_eos = torch.isin(answer, self.eos_ids) & inside
        ended = is_eos.any(-1)
        first_eos = first_true(is_eos, self.canvas_len)
        # After the first EOS only pad; outside the canvas only pad (LLaDA leaves EOS runs, dLLM-Var leaves tokens).
        answer = torch.where((index <= first_eos[:, None]) & inside, answer, self.pad_id)
        if (answer == self.mask_id).any():
            raise RuntimeError("diffusion_generate left a mask in the output; please report this as a bug.")
        used = int(torch.where(ended, first_eos + 1, self.canvas_len).max())
        return DiffusionGenerateOutput(
            sequences=torch.cat([self.seq[:, : self.prompt_length], answer[:, :used]], dim=1),
            nfe=self.nfe,
            nfe_per_row=self.nfe_per_row,
            lengths=first_eos,
            finished=ended,
            **self.length_strategy.output_fields(),  # predict: predicted_lengths, grew
            history=tuple(self.history) if self.config.output_history else None,
        )


__all__ = [
    "CACHE_MODES",
    "LENGTH_STRATEGIES",
    "LENGTH_STRATEGY_CLASSES",
    "StreamRelay",
    "UNMASKING_RULES",
    "DiffusionGenerateOutput",
    "DiffusionGenerationConfig",
    "DiffusionGenerationMixin",
    "DiffusionStep",
    "FixedLength",
    "GrowLength",
    "LengthStrategy",
    "PredictLength",
]
