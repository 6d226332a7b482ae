"""Generative perplexity: `evaluate` metric module of hf_dlm (load it with
`evaluate.load(hf_dlm.metrics.path("generative_perplexity"))`).

Perplexity of generated answers under a scoring causal LM, each answer conditioned on its prompt: the usual
fluency check of diffusion-LM papers (MDLM, BD3-LM score samples under GPT-2 Large). `evaluate`'s own `perplexity`
metric takes a Hub model id and scores text without its prompt; this one takes a model object (or a directory),
so it runs offline, e.g. with SmolLM2 from `hf_dlm.default.smollm2`. The computation is
`hf_dlm.evaluation.generative_perplexity`.
"""

import datasets
import evaluate
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dlm.evaluation import Answer, generative_perplexity

_DESCRIPTION = """Perplexity of answers under a causal LM, each conditioned on its prompt (the prompt is not scored)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the answers (text; tokenized again with the scorer's tokenizer, without special tokens).
    prompts: the prompt each answer responds to.
    model: the scoring causal LM: a loaded `PreTrainedModel`, or a name / directory for
        `AutoModelForCausalLM.from_pretrained`. Required.
    tokenizer: its tokenizer (object, name or directory); default: loaded from `model` when that is a name.
    ended: per answer, whether it ended with EOS (then the EOS is scored too: stopping is part of the answer).
        Default: all True.
    chat_template: apply the tokenizer's chat template to the prompts (default: when the tokenizer has one).
    batch_size: answers per forward (default 8).
Returns:
    perplexity: exp of the mean NLL over every scored token (corpus level).
    median_perplexity: median of per-answer perplexities.
    tokens: scored tokens.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenerativePerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "prompts": datasets.Value("string")}),
        )

    def _compute(self, predictions, prompts, model=None, tokenizer=None, ended=None, chat_template=None,
                 batch_size=8):
        if model is None:
            raise ValueError("generative_perplexity needs a scoring causal LM: pass model= (a loaded model, or a "
                             "name / directory for AutoModelForCausalLM.from_pretrained).")
        if isinstance(model, str):
            tokenizer = tokenizer if tokenizer is not None else model
            model = AutoModelForCausalLM.from_pretrained(model).eval()
            if getattr(model.config, "model_type", None) == "diffusion_lm":  # AutoModelForCausalLM loads those too
                raise ValueError("generative_perplexity scores with an autoregressive causal LM; the model given is a "
                                 "DiffusionLM checkpoint. Pass a causal LM (e.g. GPT-2, or the diffusion model's base).")
        if tokenizer is None:
            raise ValueError("Pass tokenizer= with a loaded model (the scorer's own tokenizer).")
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if ended is None:
            ended = [True] * len(predictions)
        if len(ended) != len(predictions):
            raise ValueError(f"`ended` has {len(ended)} flags for {len(predictions)} answers.")
        answers = [
            Answer(prompt, text, tokenizer(text, add_special_tokens=False)["input_ids"], bool(end), nfe=0, seconds=0.0)
            for prompt, text, end in zip(prompts, predictions, ended)
        ]
        scores = generative_perplexity(model, tokenizer, answers, batch_size=batch_size, chat_template=chat_template)
        return {"perplexity": scores["ppl"], "median_perplexity": scores["median_ppl"], "tokens": sum(scores["tokens"])}
