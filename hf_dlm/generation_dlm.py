"""Variable-length diffusion decoding: `DiffusionLM.diffusion_generate`, its settings and its outputs.

Remote code: copied next to every saved checkpoint; imports only torch, transformers and its sibling files, which
travel with it (transformers' `save_pretrained` copies every file a remote-code file imports relatively):

| file | what |
|---|---|
| `generation_dlm.py` (this) | `DiffusionGenerationConfig`, `DiffusionGenerateOutput`, `DiffusionGenerationMixin` (argument checks, then one decoder per call) |
| `decoder_dlm.py` | `_Decoder` (state, forwards, KV caches, commits, the loop), `DiffusionStep`, `StreamRelay` |
| `length_strategies_dlm.py` | `fixed` / `grow` / `predict` as `LengthStrategy` classes on a `CanvasView` |
| `unmasking_dlm.py` | sampling (transformers' `LogitsProcessorList`) and the `unmasking` rules as classes |
| `settings_dlm.py` | the settings' table and validation, standard library only (the CLI checks flags without torch) |
| `generate_kwargs_dlm.py`, `stopping_dlm.py` | transformers' `generate()` arguments; stop strings and criteria |

The length strategies (docs/decoding.md has worked examples): `fixed` (LLaDA, a canvas of the whole budget), `grow`
(dLLM-Var, one block at a time until EOS) and `predict` (a bound read from p(EOS) at the first step, growing if
needed); `decoder_dlm.py` explains unmasking and the KV caches.

Reading order: `DiffusionGenerationConfig` (the settings), the output type, `DiffusionGenerationMixin`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput

from .decoder_dlm import DiffusionStep, StreamRelay, _Decoder, crop_cache
from .generate_kwargs_dlm import generate_arguments, temperature_for
from .length_strategies_dlm import (
    LENGTH_STRATEGY_CLASSES,
    FixedLength,
    GrowLength,
    LengthStrategy,
    PredictLength,
    eos_probabilities,
    first_true,
    length_bound,
    predicted_lengths,
)
from .settings_dlm import (
    CACHE_MODES,
    LENGTH_STRATEGIES,
    SETTINGS,
    UNMASKING_RULES,
    check_loaded_token_ids,
    check_prompt_tensors,
    check_token_ids_in_vocabulary,
    num_blocks,
    refuse_unknown_settings,
    steps_per_block,
    token_id_list,
    validate_generation_settings,
)
from .stopping_dlm import RowStops
from .unmasking_dlm import UNMASKING_RULE_CLASSES, UnmaskingRule, apply_repetition_penalty


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
        decided_as_context (`bool`, defaults to `False`):
            Block-diffusion models with a causal context (`config.attention="causal_prefix"`) only: the decided
            prefix of the current block (its tokens from the block start up to the first mask) joins the causal
            context, and the canvas starts at the first mask. Those tokens are then read as the causal LM reads them,
            so the first mask is scored by the AR model's own next-token computation, and the masks after it see a
            clean context as in training (TiDAR's layout: clean tokens causal, masks drafting after them). The KV
            cache stays exact. A bidirectional model has no causal context to extend: refused there.
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
        tokens_per_forward (`float`): answer tokens (`lengths`) per forward of the rows that made them,
            `sum(lengths) / sum(nfe_per_row)` (transformers' `DiffusionGemmaGenerationOutput` and `SpeculativeOutput`
            report it under this name; `hf_dlm.metrics.tokens_per_forward` over many calls).
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
    tokens_per_forward: float | None = None


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
        stops = RowStops.for_batch(input_ids, attention_mask, config.mask_token_id, config.eos_token_ids,
                                   config.pad_token_id, stop_strings, tokenizer, stopping_criteria)
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
            output = DiffusionGenerateOutput(
                **_Decoder(self, config, input_ids, attention_mask, generator, callback, stops or None).run()
            )
        except BaseException:
            if relay is not None:
                relay.streamer.end()  # decoding failed or was stopped: a reader of the streamer stops waiting
            raise
        if relay is not None:
            relay.finish(output.sequences[0, input_ids.shape[1] :])
        return output if config.return_dict_in_generate else output.sequences

    @torch.no_grad()
    def first_step_eos_probabilities(self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor | None = None,
                                     **kwargs) -> torch.Tensor:
        """p(EOS) [batch, max_new_tokens] at every canvas position of `predict`'s first forward (prompt +
        `max_new_tokens` masks, no cache): exactly what `predict` thresholds. The prompts and `kwargs` (settings of
        [`DiffusionGenerationConfig`], e.g. `max_new_tokens`) are checked as by `diffusion_generate`."""
        config = self._prepare_diffusion_config(None, kwargs | {"length_strategy": "predict", "use_cache": False})
        input_ids, attention_mask = self._check_prompts(input_ids, attention_mask, config)
        return _Decoder(self, config, input_ids, attention_mask, None, None).first_step_eos_probabilities()

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


# Names of the decoder's sibling files, importable from here as before the decoder had rooms of its own.
__all__ = [
    "CACHE_MODES",
    "LENGTH_STRATEGIES",
    "LENGTH_STRATEGY_CLASSES",
    "UNMASKING_RULES",
    "UNMASKING_RULE_CLASSES",
    "DiffusionGenerateOutput",
    "DiffusionGenerationConfig",
    "DiffusionGenerationMixin",
    "DiffusionStep",
    "FixedLength",
    "GrowLength",
    "LengthStrategy",
    "PredictLength",
    "StreamRelay",
    "UnmaskingRule",
    "apply_repetition_penalty",
    "crop_cache",
    "eos_probabilities",
    "first_true",
    "length_bound",
    "predicted_lengths",
]
