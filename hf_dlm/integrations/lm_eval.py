"""lm-evaluation-harness model for hf_dlm diffusion LMs: `--model hf_dlm`.

    python -m hf_dlm.integrations.lm_eval --model hf_dlm --device cpu --batch_size 16 \\
        --model_args pretrained=DIR,length_strategy=grow,threshold=0.9 --tasks gsm8k

`python -m hf_dlm.integrations.lm_eval` is lm-eval's own command line (every option of `lm_eval`) with this module
imported first. lm-eval 0.4.13 (the release this was written against) finds models only in its own registry, filled
by importing their module; it has no plugin discovery. The `lm_eval.models` entry point in pyproject.toml is for
lm-eval releases that scan that group (added upstream by EleutherAI/lm-evaluation-harness#4013, unreleased when
this was written): with them plain `lm_eval --model hf_dlm ...` works.

Requests (LLaDA's harness model, github.com/ML-GSAI/LLaDA eval_llada.py, is the reference for the estimators):

- `generate_until`: prompts left-padded into batches and decoded by `model.diffusion_generate`; each row stops at
  its own EOS or as soon as its decided prefix holds an `until` string (`stop_strings`: the row leaves the batch
  then, saving the forwards after it), and its text is cut at the first `until` string. `max_gen_toks` is the decoding budget
  (`max_new_tokens`). Decoding settings: the checkpoint's generation_config.json, overridden by any
  `DiffusionGenerationConfig` field in `--model_args`, overridden by the task's and `--gen_kwargs`' settings.
- `loglikelihood`: the ELBO of the continuation, a lower bound on its log-likelihood (a masked diffusion LM has no
  exact likelihood), and `is_greedy`, by `hf_dlm.likelihood` (`DiffusionLikelihood`: exact enumeration of the mask
  subsets for short blocks, `mc_num` stratified masks otherwise; block by block for `attention="causal_prefix"`).
- `loglikelihood_rolling`: lm-eval's rolling windows (each token scored once, with as much context as fits), each
  window's ELBO summed: a lower bound on the text's log-likelihood, so perplexities are upper bounds.

Data parallel: under `accelerate launch -m hf_dlm.integrations.lm_eval ...` every process loads the model on its
own device and answers its share of the requests (lm-eval's evaluator splits documents by `rank` and gathers the
metrics with `gather_object`), as lm-eval's `hf` model does with accelerate. Without GPUs:
`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m ...` (gloo; see docs/evaluation.md).
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator
from tqdm import tqdm

from ..evaluation import split_answer
from ..generation_dlm import DiffusionGenerationConfig
from ..likelihood import MC_SAMPLING, DiffusionLikelihood, elbo_masks, left_padded_ids
from ..metrics import tokens_per_forward
from ..settings_dlm import SETTING_NAMES, validate_generation_settings

# A child of lm-eval's "lm_eval" logger: its command line sets that logger's handler and level (--verbosity), so
# our messages show with its own.
logger = logging.getLogger("lm_eval.models.hf_dlm")

MODEL_NAMES = ("hf_dlm", "hf-dlm")
# `pretrained=hf_dlm:default` loads the embedded default model (hf_dlm.default); ':' never occurs in a Hub id.
DEFAULT_MODEL = "hf_dlm:default"
# Generation arguments lm-eval tasks use that are not DiffusionGenerationConfig fields; handled here.
HARNESS_GEN_KWARGS = ("until", "max_gen_toks", "do_sample")
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when a model states no position limit


def cut_at_stop_strings(text: str, until: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any stop string (empty strings are ignored)."""
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


class DiffusionLMEval(TemplateLM):
    """An `lm_eval.api.model.LM` over a `DiffusionLM` (registered as `hf_dlm` and `hf-dlm`).

    Args (all settable from `--model_args key=value,...`):
        pretrained: a DiffusionLM checkpoint (directory or Hub id), `hf_dlm:default` for the embedded default model,
            or a loaded `DiffusionLM` (in Python; then `tokenizer` or `model.tokenizer` is used).
        tokenizer: tokenizer name / directory / object; default: the checkpoint's.
        revision, trust_remote_code: passed to `from_pretrained` (trust_remote_code=True loads the checkpoint's
            own copy of the model code instead of the installed hf_dlm's).
        dtype: "auto" (the checkpoint's), "float32", "bfloat16", "float16" or a torch.dtype.
        device: "cpu", "cuda", "cuda:0", ...; ignored under `accelerate launch` (each process uses its own).
        batch_size: prompts per `diffusion_generate` call, and rows per forward when scoring likelihoods.
        mc_num: masks per block for the ELBO (LLaDA: 128); blocks with at most mc_num non-empty subsets are
            enumerated exactly. mc_sampling: "stratified" (default) or "iid". mc_seed: seed of the masks (each
            request's masks depend only on it and the request's tokens, not on batching or the process).
        elbo_block_length: tokens per ELBO block; default: the whole continuation for bidirectional models, the
            generation config's `block_length` for `attention="causal_prefix"` models.
        check_greedy: compute `is_greedy` (costs one forward per continuation token). False returns False for
            every request, as LLaDA's harness does by default; only tasks such as LAMBADA's `acc` read it.
        max_length: context + continuation limit in tokens (default: the backbone's position limit).
        add_bos_token, prefix_token_id: as in lm-eval's `hf` model.
        **decoding: any `DiffusionGenerationConfig` field (length_strategy, block_length, threshold, steps,
            unmasking, temperature, ...): the decoding defaults for `generate_until`.
    """

    backend = "causal"  # lm-eval's TemplateLM splits context and continuation as for a decoder-only model

    def __init__(self, pretrained=None, tokenizer=None, revision: str | None = None, trust_remote_code: bool = False,
                 dtype="auto", device: str | None = None, batch_size: int | str = 8, max_batch_size: int | None = None,
                 mc_num: int = 128, mc_sampling: str = "stratified", mc_seed: int = 0,
                 elbo_block_length: int | None = None, check_greedy: bool = True, max_length: int | None = None,
                 add_bos_token: bool | None = None, prefix_token_id: int | None = None, **decoding):
        super().__init__()
        del max_batch_size  # lm-eval passes it for automatic batch sizing, which hf_dlm does not do
        if isinstance(batch_size, str) and not batch_size.isdigit():
            raise ValueError(f"hf_dlm needs an integer batch_size, got {batch_size!r} (automatic sizing is not "
                             f"supported: pass --batch_size N).")
        self.batch_size_per_device = int(batch_size)
        if self.batch_size_per_device < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not isinstance(mc_num, int) or isinstance(mc_num, bool) or mc_num < 1:
            raise ValueError(f"mc_num must be a positive integer, got {mc_num!r}.")
        if mc_sampling not in MC_SAMPLING:
            raise ValueError(f"mc_sampling must be one of {MC_SAMPLING}, got {mc_sampling!r}.")
        if elbo_block_length is not None and (not isinstance(elbo_block_length, int) or elbo_block_length < 1):
            raise ValueError(f"elbo_block_length must be a positive integer or None, got {elbo_block_length!r}.")
        check_model_args(pretrained, mc_seed=mc_seed, check_greedy=check_greedy, max_length=max_length,
                         decoding=decoding)
        self.mc_num, self.mc_sampling, self.mc_seed = mc_num, mc_sampling, mc_seed
        self.check_greedy = check_greedy
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id

        self.model, self.tokenizer = _load(pretrained, tokenizer, revision, trust_remote_code, dtype)
        # A model object stays where the caller put it (distributed runs need a checkpoint each process loads).
        self._device = self._setup_device(device) if isinstance(pretrained, str) else self.model.device
        self.model.to(self._device).eval()
        self.pretrained = pretrained if isinstance(pretrained, str) else type(pretrained).__name__

        config = self.model.config
        if getattr(config, "mask_token_id", None) is None:
            raise ValueError("The model has no mask_token_id: adapt it with DiffusionLM.from_causal_lm first.")
        if config.pad_token_id is None:
            raise ValueError("The model has no pad_token_id: save it with the tokenizer from_causal_lm returned "
                             "(adaptation adds a pad token when there is none).")
        self.mask_id, self.pad_id, self.eos_ids = config.mask_token_id, config.pad_token_id, config.eos_token_ids
        self.causal_prefix = getattr(config, "attention", "bidirectional") == "causal_prefix"

        unknown = sorted(set(decoding) - set(DiffusionGenerationConfig().to_dict_own()))
        if unknown:
            raise ValueError(
                f"Unknown hf_dlm model_args {unknown}. Valid: pretrained, tokenizer, revision, trust_remote_code, "
                f"dtype, device, batch_size, mc_num, mc_sampling, mc_seed, elbo_block_length, check_greedy, "
                f"max_length, add_bos_token, prefix_token_id, and the decoding settings "
                f"{sorted(DiffusionGenerationConfig().to_dict_own())}."
            )
        # The decoding defaults: the checkpoint's generation config with --model_args on top (a copy: a model
        # object passed in keeps its own).
        self.generation_config = copy.deepcopy(self.model.generation_config)
        if not isinstance(self.generation_config, DiffusionGenerationConfig):
            self.generation_config = DiffusionGenerationConfig.from_model_config(config)
        for key, value in decoding.items():
            setattr(self.generation_config, key, value)
        self.generation_config.validate()
        self.elbo_block_length = elbo_block_length or (
            self.generation_config.block_length if self.causal_prefix else None
        )
        self.likelihood = DiffusionLikelihood(self.model, self.batch_size_per_device, mc_num, mc_sampling, mc_seed,
                                              self.elbo_block_length)
        self._max_length = max_length if max_length is not None else (
            getattr(self.model, "max_positions", None) or DEFAULT_MAX_LENGTH)
        # Per-answer decoding records of generate_until (length, forwards, ended, predicted_length, grew), for
        # hf_dlm.metrics: lm-eval's results hold only the task metrics.
        self.generation_records: list[dict] = []

    # ------------------------------------------------------------------ setup
    def _setup_device(self, device: str | None) -> torch.device:
        from accelerate import Accelerator, InitProcessGroupKwargs
        from accelerate.utils import get_int_from_env

        # Only a launcher's processes (accelerate launch / torchrun / mpirun set these) build an Accelerator: its
        # state is process-wide, and one built here would fix the settings of any later Accelerator in the process
        # (a Trainer's, another test's).
        launched = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)
        if launched > 1:
            # Ranks finish their shares at different times and then wait in gather_object; the default process-group
            # timeout (30 min) would abort long evaluations (lm-eval's hf model sets the same year-long timeout).
            accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
            if accelerator.num_processes != launched:
                raise RuntimeError(
                    f"Launched as {launched} processes, but accelerate joined {accelerator.num_processes} "
                    f"({accelerator.distributed_type}): every process would evaluate every document. Without GPUs "
                    f"set ACCELERATE_USE_CPU=1 (gloo on CPU)."
                )
            self.accelerator = accelerator
            # process_index (global), not local_process_index: lm-eval shards documents by rank over world_size, so
            # on several machines a local index would hand two processes the same share.
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
            return accelerator.device
        if device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line defaults to --device cuda:0; on a machine without CUDA that default cannot be
            # meant. Said loudly rather than failing every CPU run that forgot --device cpu.
            logger.warning("hf_dlm: device %r requested but CUDA is not available; running on cpu.", device)
            return torch.device("cpu")
        return torch.device(device)

    # ------------------------------------------------------------------ lm-eval's LM interface
    @property
    def device(self):
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self.eos_ids[0]

    @property
    def prefix_token_id(self) -> int:
        # The context of an empty-context request (TemplateLM): with the AR shift position 0 is never predicted,
        # so every scored sequence starts with a real token.
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self.generation_config.max_new_tokens

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def all_gather(self, tensor):
        return tensor if self.world_size <= 1 else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst=0):
        if self.world_size <= 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=gathered, dst=dst)
        return gathered

    def barrier(self):
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            if self.add_bos_token is not None:
                add_special_tokens = self.add_bos_token
            elif self.tokenizer.bos_token and string.startswith(self.tokenizer.bos_token):
                add_special_tokens = False  # a chat template already wrote the BOS
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **kwargs)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    # ------------------------------------------------------------------ generate_until
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # Longest prompts first (padding stays small within a batch); one batch never mixes generation settings.
        collator = Collator([r.args for r in requests], sort_fn=lambda a: (-len(self.tok_encode(a[0])), a[0]),
                            group_by="gen_kwargs", group_fn=lambda a: a[1])
        results = []
        records = []
        with tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="hf_dlm generate_until") as bar:
            for chunk in collator.get_batched(n=self.batch_size):
                contexts, all_gen_kwargs = zip(*chunk)
                settings, until = self.generation_settings(all_gen_kwargs[0])
                input_ids, attention_mask = self._left_padded(
                    [self._prompt_ids(c, settings["max_new_tokens"]) for c in contexts]
                )
                # `until` ends rows early inside the decoder (the answer then ends with the stopping token); the
                # text is still cut at the stop string below, as lm-eval expects.
                out = self.model.diffusion_generate(input_ids, attention_mask, generation_config=self.generation_config,
                                                    return_dict_in_generate=True, stop_strings=until,
                                                    tokenizer=self.tokenizer, **settings)
                generated = out.sequences[:, input_ids.shape[1] :].tolist()
                for i, (context, gen_kwargs, row) in enumerate(zip(contexts, all_gen_kwargs, generated)):
                    tokens, ended = split_answer(row, self.eos_ids, self.pad_id)
                    text = cut_at_stop_strings(self.tokenizer.decode(tokens, skip_special_tokens=True), until)
                    record = {"length": len(tokens), "forwards": int(out.nfe_per_row[i]), "ended": ended}
                    if out.predicted_lengths is not None:
                        record |= {"predicted_length": int(out.predicted_lengths[i]), "grew": bool(out.grew[i])}
                    records.append(record)
                    results.append(text)
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                    bar.update(1)
        self.generation_records += records
        if records:
            logger.info("hf_dlm: %d answers, %.2f tokens per forward, %.1f forwards per answer", len(records),
                        tokens_per_forward([r["length"] for r in records], [r["forwards"] for r in records]),
                        sum(r["forwards"] for r in records) / len(records))
        return collator.get_original(results)

    def generation_settings(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        """`diffusion_generate` keyword arguments and stop strings of one request's `gen_kwargs` (the task's
        generation_kwargs with --gen_kwargs merged in). `max_gen_toks` becomes `max_new_tokens`; `do_sample=False`
        means greedy (temperature 0), `do_sample=True` without a temperature samples at 1.0 unless the model_args
        set one; every other key must be a DiffusionGenerationConfig field."""
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        budget, alias = kwargs.pop("max_gen_toks", None), kwargs.pop("max_new_tokens", None)
        if budget is not None and alias is not None and int(budget) != int(alias):
            raise ValueError(f"gen_kwargs set max_gen_toks={budget} and max_new_tokens={alias}: give one budget.")
        budget = budget if budget is not None else alias
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is False:
            kwargs["temperature"] = 0.0
        elif do_sample is True:
            temperature = kwargs.get("temperature", self.generation_config.temperature)
            if "temperature" in kwargs and not temperature:
                raise ValueError("gen_kwargs set do_sample=True with temperature=0: give a temperature > 0, or "
                                 "do_sample=False for greedy decoding.")
            kwargs["temperature"] = temperature or 1.0
        fields = DiffusionGenerationConfig().to_dict_own()
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise ValueError(
                f"gen_kwargs {unknown} are not diffusion decoding settings. hf_dlm takes {list(HARNESS_GEN_KWARGS)} "
                f"and every DiffusionGenerationConfig field: {sorted(fields)}."
            )
        kwargs["max_new_tokens"] = int(budget) if budget is not None else self.max_gen_toks
        return kwargs, until

    def _prompt_ids(self, context: str, max_new_tokens: int) -> list[int]:
        ids = self.tok_encode(context) or [self.prefix_token_id]  # diffusion_generate refuses empty prompts
        room = self.max_length - max_new_tokens
        if room < 1:
            raise ValueError(f"max_gen_toks={max_new_tokens} leaves no room for a prompt within the model's "
                             f"{self.max_length} positions: lower max_gen_toks.")
        if len(ids) > room:
            logger.warning("hf_dlm: prompt of %d tokens cut to its last %d (max_length %d - max_gen_toks %d).",
                           len(ids), room, self.max_length, max_new_tokens)
            ids = ids[-room:]
        return ids

    def _left_padded(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_padded_ids(rows, self.pad_id, self.device)

    # ------------------------------------------------------------------ likelihoods
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = [self._fit(context, continuation) for _, context, continuation in requests]
        elbos = self.elbo(pairs, disable_tqdm=disable_tqdm)
        greedy = self.greedy_matches(pairs) if self.check_greedy else [False] * len(pairs)
        results = []
        for (key, _, _), elbo, is_greedy in zip(requests, elbos, greedy):
            results.append((elbo, is_greedy))
            self.cache_hook.add_partial("loglikelihood", key, (elbo, is_greedy))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, owners = [], []
        for index, (text,) in enumerate(r.args for r in requests):
            # The row of a window is context + continuation, so windows hold max_length - 1 predicted tokens
            # plus the one token of context before them.
            windows = lm_eval_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length - 1, context_len=1,
            )
            for window in map(lm_eval_utils.make_disjoint_window, windows):
                pairs.append(window)
                owners.append(index)
        elbos = self.elbo(pairs, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, elbo in zip(owners, elbos):
            totals[owner] += elbo
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate the context so that context + continuation fits the model (lm-eval's hf model does the same)."""
        if len(continuation) >= self.max_length:
            raise ValueError(f"A continuation of {len(continuation)} tokens does not fit the model's {self.max_length} "
                             f"positions with any context.")
        room = self.max_length - len(continuation)
        if len(context) > room:
            logger.warning("hf_dlm: context of %d tokens cut to its last %d to fit max_length %d.", len(context), room,
                           self.max_length)
        return list(context[-room:]), list(continuation)

    def elbo(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], disable_tqdm: bool = True) -> list[float]:
        """The ELBO of each continuation given its context (token ids): `DiffusionLikelihood.elbo`."""
        return self.likelihood.elbo(pairs, progress=not disable_tqdm and self.rank == 0)

    def greedy_matches(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[bool]:
        """Whether greedy decoding reproduces each continuation: `DiffusionLikelihood.greedy_matches`."""
        return self.likelihood.greedy_matches(pairs, self.generation_config)

    def get_model_info(self) -> dict:
        """Written into lm-eval's results["config"]: what a reader needs to reproduce the numbers."""
        return {
            "model_num_parameters": self.model.num_parameters(),
            "model_dtype": str(self.model.dtype),
            "hf_dlm_attention": getattr(self.model.config, "attention", "bidirectional"),
            "hf_dlm_decoding": self.generation_config.to_dict_own(),  # before each task's gen_kwargs
            "hf_dlm_elbo": {"mc_num": self.mc_num, "mc_sampling": self.mc_sampling, "mc_seed": self.mc_seed,
                            "block_length": self.elbo_block_length, "check_greedy": self.check_greedy},
        }


def check_model_args(pretrained, *, mc_seed, check_greedy, max_length, decoding) -> None:
    """The model_args lm-eval passes as parsed text ("True" -> bool, "12" -> int, "nan" -> float, anything else a
    string): refuse what is not of the right kind, before any loading, saying what to write instead."""
    if pretrained is None:
        raise ValueError("hf_dlm needs pretrained=: --model_args pretrained=DIR (a saved DiffusionLM checkpoint, a Hub "
                         f"id, or {DEFAULT_MODEL!r} for the embedded default).")
    if isinstance(pretrained, str) and pretrained != DEFAULT_MODEL:
        from ..loading import ModelNotFoundError, check_model_source, looks_like_path

        if looks_like_path(pretrained) and not Path(pretrained).expanduser().exists():
            raise ValueError(f"pretrained={pretrained}: the directory {pretrained} does not exist; pass a saved "
                             f"DiffusionLM checkpoint directory.")
        try:
            check_model_source(pretrained)
        except ModelNotFoundError as error:
            raise ValueError(f"pretrained={pretrained}: {error}") from None
    if not isinstance(mc_seed, int) or isinstance(mc_seed, bool):
        raise ValueError(f"mc_seed must be an integer (the seed of the ELBO's Monte Carlo masks), got {mc_seed!r}.")
    if not isinstance(check_greedy, bool):
        raise ValueError(f"check_greedy must be True or False, got {check_greedy!r}.")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2):
        raise ValueError(f"max_length must be an integer >= 2 (the longest context scored, in tokens) or unset "
                         f"(the model's positions), got {max_length!r}.")
    # The decoding settings given (unknown names get their own message later, with the model_args listed).
    validate_generation_settings({k: v for k, v in decoding.items() if k in SETTING_NAMES})


def _load(pretrained, tokenizer, revision, trust_remote_code, dtype):
    """(model, tokenizer) from a checkpoint, the embedded default, or a loaded model."""
    from transformers import AutoModel, AutoTokenizer

    from .. import register_auto_classes

    register_auto_classes()  # `import hf_dlm` is lazy: AutoModel must know model_type "diffusion_lm" before loading

    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype must be 'auto' or a torch dtype name such as 'float32', got {dtype!r}.")
        dtype = getattr(torch, dtype)
    if pretrained == DEFAULT_MODEL:
        from ..default import load_default

        model = load_default(dtype=None if dtype in (None, "auto") else dtype)
    elif isinstance(pretrained, str):
        model = AutoModel.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code,
                                          dtype=dtype)
    else:
        model = pretrained
    if not hasattr(model, "diffusion_generate"):
        raise ValueError(
            f"{pretrained!r} is not a DiffusionLM ({type(model).__name__}). Evaluate a causal LM with lm-eval's own "
            f"`--model hf`, or adapt it first: DiffusionLM.from_causal_lm(...).save_pretrained(DIR)."
        )
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, revision=revision, trust_remote_code=trust_remote_code)
    elif tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None and isinstance(pretrained, str):
            tokenizer = AutoTokenizer.from_pretrained(pretrained, revision=revision,
                                                      trust_remote_code=trust_remote_code)
        if tokenizer is None:
            raise ValueError("No tokenizer: pass tokenizer= with a model object that has no `.tokenizer`.")
    return model, tokenizer


def register() -> None:
    """Put `DiffusionLMEval` in lm-eval's model registry as `hf_dlm` / `hf-dlm` (repeating it is harmless)."""
    register_model(*MODEL_NAMES)(DiffusionLMEval)


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line with `--model hf_dlm` available (arguments: those of `lm_eval`)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    # `python -m` runs this file as `__main__`, a second copy of the module. Hand over to the importable module so
    # that one class answers to "hf_dlm" even when something else imports hf_dlm.integrations.lm_eval.
    from hf_dlm.integrations.lm_eval import main as _main

    _main()
else:
    register()

__all__ = ["DEFAULT_MODEL", "DiffusionLMEval", "cut_at_stop_strings", "elbo_masks", "main", "register"]
