"""The lm-evaluation-harness model `hf_dlm`: ELBO likelihoods against exact enumeration, greedy checks, batched
diffusion decoding behind generate_until, local tasks end to end, the command line, and data parallelism."""

import itertools
import json
import math
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("lm_eval")
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import Registry, get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from hf_dlm import DiffusionLM  # noqa: E402
from hf_dlm.integrations.lm_eval import DiffusionLMEval, cut_at_stop_strings, elbo_masks  # noqa: E402
from hf_dlm.testing import char_tokenizer, tiny_causal_lm  # noqa: E402
from tests.conftest import make_dlm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCAL_TASKS = ROOT / "tests" / "lm_eval_tasks"
PROMPTS = ["2+2=", "capital of france:", "abc", "hello there "]


# ---------------------------------------------------------------------------------------------- helpers
def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def exact_elbo(model, context, continuation, block_length=None):
    """The ELBO by brute force: every non-empty mask subset M of every block, one row each, weighted by
    P(k) P(M | k) (L / k) = (1 / L) (1 / C(L, k)) (L / k)."""
    mask = model.config.mask_token_id
    size = block_length or len(continuation)
    total = 0.0
    for start in range(0, len(continuation), size):
        block, prefix = continuation[start : start + size], list(context) + list(continuation[:start])
        length = len(block)
        subsets = [s for k in range(1, length + 1) for s in itertools.combinations(range(length), k)]
        rows = [prefix + [mask if i in s else t for i, t in enumerate(block)] for s in subsets]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor(rows), canvas_start=len(prefix)).logits.float().log_softmax(-1)
        for row, subset in enumerate(subsets):
            k = len(subset)
            ce = -sum(float(logp[row, len(prefix) + i, block[i]]) for i in subset)
            total += ce * (length / k) / (length * math.comb(length, k))
    return -total


def greedy_suffix(model, context, length):
    """LLaDA's suffix_greedy_prediction, written out: `length` masks after the context, each step fills the mask
    whose argmax token is the most probable (mask and a dedicated pad never chosen, as in diffusion_generate)."""
    config = model.config
    seq = list(context) + [config.mask_token_id] * length
    for _ in range(length):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq]), canvas_start=len(context)).logits[0].float()
        logits[:, [config.mask_token_id, config.pad_token_id]] = -torch.inf
        confidence, token = logits.softmax(-1).max(-1)
        masked = [i for i in range(len(context), len(seq)) if seq[i] == config.mask_token_id]
        best = max(masked, key=lambda i: (float(confidence[i]), -i))
        seq[best] = int(token[best])
    return seq[len(context) :]


def write_task(directory: Path, name: str, docs: list[dict], **config) -> Path:
    """A local lm-eval task: a JSONL file and a YAML reading it (absolute path: no Hub, any working directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", **config}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(task))
    return directory


def evaluate_locally(model, tasks_dir: Path, tasks: list[str], **kwargs):
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    return simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=True, bootstrap_iters=0,
                           **kwargs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-2 adapted with DiffusionLM.from_causal_lm and saved, as a user's checkpoint would be."""
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    model = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(tokenizer)), tokenizer)
    directory = tmp_path_factory.mktemp("tiny_dlm")
    model.save_pretrained(directory)
    return directory


def generation_task(tmp_path, name="tiny_gen", targets=None, until=("\n",), max_gen_toks=6):
    docs = [{"question": p, "answer": t} for p, t in zip(PROMPTS, targets or ["zz"] * len(PROMPTS))]
    return write_task(tmp_path / "tasks", name, docs, output_type="generate_until", doc_to_text="{{question}}",
                      doc_to_target="{{answer}}", metric_list=[{"metric": "exact_match"}],
                      generation_kwargs={"until": list(until), "max_gen_toks": max_gen_toks, "do_sample": False})


# ---------------------------------------------------------------------------------------------- the estimator
def test_small_blocks_are_enumerated_exactly_with_the_elbo_weights():
    masks, weights = elbo_masks(3, mc_num=7)
    assert masks.shape == (7, 3) and len({tuple(m.tolist()) for m in masks}) == 7 and masks.any(-1).all()
    for mask, weight in zip(masks, weights):
        k = int(mask.sum())
        assert weight == pytest.approx(1 / (k * math.comb(3, k)))
    # With a loss that ignores the mask the ELBO is the plain sum of per-token losses.
    losses = torch.tensor([0.3, 1.1, 2.0], dtype=torch.float64)
    assert float((weights * (masks.double() @ losses)).sum()) == pytest.approx(float(losses.sum()), abs=1e-12)


def test_longer_blocks_are_sampled_with_the_mask_count_spread_evenly():
    masks, weights = elbo_masks(5, mc_num=20, generator=torch.Generator().manual_seed(0))
    k = masks.sum(-1)
    assert masks.shape == (20, 5)
    assert torch.bincount(k, minlength=6)[1:].tolist() == [4, 4, 4, 4, 4]
    assert torch.allclose(weights, 5 / (k.double() * 20))
    with pytest.raises(ValueError, match="mc_sampling"):
        elbo_masks(5, 20, sampling="sobol")


def test_stratified_mask_counts_lower_the_variance_when_the_loss_depends_on_the_mask_ratio():
    # More masks make every token harder (as for a trained model): the loss of token i is c_i (1 + k / L).
    length, n, repeats = 8, 8, 400
    costs = torch.linspace(0.5, 2.0, length, dtype=torch.float64)

    def estimates(sampling):
        values = []
        for seed in range(repeats):
            masks, weights = elbo_masks(length, n, sampling, torch.Generator().manual_seed(seed))
            k = masks.sum(-1, keepdim=True).double()
            values.append(float((weights * (masks.double() * costs * (1 + k / length)).sum(-1)).sum()))
        return torch.tensor(values, dtype=torch.float64)

    exact_masks, exact_weights = elbo_masks(length, 2**length - 1)
    k = exact_masks.sum(-1, keepdim=True).double()
    exact = float((exact_weights * (exact_masks.double() * costs * (1 + k / length)).sum(-1)).sum())
    stratified, iid = estimates("stratified"), estimates("iid")
    for values in (stratified, iid):  # both unbiased
        assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / math.sqrt(repeats)
    assert float(stratified.var()) < 0.5 * float(iid.var())


def test_elbo_equals_the_exact_enumeration_of_every_mask(dlm):
    model, tokenizer = dlm
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=5)
    pairs = [(ids(tokenizer, "2+2="), ids(tokenizer, " 4")), (ids(tokenizer, "abc"), ids(tokenizer, "def")),
             (ids(tokenizer, "x"), ids(tokenizer, "hello"))]
    expected = [exact_elbo(model, c, t) for c, t in pairs]
    assert lm.elbo(pairs) == pytest.approx(expected, abs=1e-4)
    assert all(value < 0 for value in expected)


def test_monte_carlo_elbo_matches_the_exact_value_within_its_standard_error(dlm):
    model, tokenizer = dlm
    context, continuation = ids(tokenizer, "q:"), ids(tokenizer, "abcdefghij")  # 10 tokens: 1023 masks
    length = len(continuation)
    # The exact value and the spread of one sample X = (L / k) sum_{i in M} CE_i, from every mask at once.
    masks, weights = elbo_masks(length, 2**length - 1)
    rows = torch.tensor(context + continuation).repeat(len(masks), 1)
    rows[:, len(context) :] = torch.where(masks, model.config.mask_token_id, rows[:, len(context) :])
    with torch.no_grad():
        logp = model(input_ids=rows).logits.float().log_softmax(-1)[:, len(context) :]
    ce = -logp.gather(-1, torch.tensor(continuation).expand(len(masks), -1)[..., None]).squeeze(-1).double()
    k = masks.sum(-1).double()
    x = length / k * (ce * masks).sum(-1)  # one sample's value for each mask
    probability = weights * k / length  # P(k) P(M | k)
    exact = -float((probability * x).sum())
    sd = math.sqrt(float((probability * x**2).sum()) - exact**2)

    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=1023, mc_num=1023)
    assert lm.elbo([(context, continuation)]) == pytest.approx([exact], abs=1e-4)  # 2^10 - 1 masks: exact
    for sampling in ("stratified", "iid"):
        lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=512, mc_num=512, mc_sampling=sampling)
        (estimate,) = lm.elbo([(context, continuation)])
        assert abs(estimate - exact) < 4 * sd / math.sqrt(512), sampling


def test_causal_prefix_models_score_the_continuation_block_by_block():
    model, tokenizer = make_dlm(attention="causal_prefix")
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, elbo_block_length=2, batch_size=8)
    context, continuation = ids(tokenizer, "ab:"), ids(tokenizer, "xyz")
    assert lm.elbo([(context, continuation)]) == pytest.approx([exact_elbo(model, context, continuation, 2)], abs=1e-4)
    # Default: the decoding block, the factorisation the model generates with.
    assert DiffusionLMEval(pretrained=model, tokenizer=tokenizer).elbo_block_length == model.generation_config.block_length
    assert DiffusionLMEval(pretrained=make_dlm()[0], tokenizer=tokenizer).elbo_block_length is None


def test_is_greedy_is_true_exactly_for_the_one_token_per_step_greedy_continuation(dlm):
    model, tokenizer = dlm
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=4)
    context = ids(tokenizer, "hello world ")
    greedy = greedy_suffix(model, context, 4)
    assert tokenizer.eos_token_id not in greedy
    other = greedy[:-1] + [(greedy[-1] + 1) % len(tokenizer)]
    assert lm.greedy_matches([(context, greedy), (context, other), (ids(tokenizer, "ab"), [])]) == [True, False, True]
    skip = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, check_greedy=False)
    assert skip._loglikelihood_tokens([(("", ""), context, greedy)])[0][1] is False


def test_rolling_loglikelihood_sums_the_elbo_of_lm_eval_s_windows(dlm):
    model, tokenizer = dlm
    text = "abcdefghij"
    tokens = ids(tokenizer, text)
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, max_length=6, mc_num=32, batch_size=64)
    request = type("Request", (), {"args": (text,)})()
    # max_length 6: windows of 5 predicted tokens, each row = context + window <= 6 tokens.
    windows = [([lm.prefix_token_id], tokens[:5]), ([tokens[4]], tokens[5:])]
    assert lm.loglikelihood_rolling([request]) == pytest.approx([sum(lm.elbo(windows))], abs=1e-6)
    whole = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, mc_num=32, batch_size=64)
    assert whole.loglikelihood_rolling([request]) == pytest.approx(whole.elbo([([lm.prefix_token_id], tokens)]))


# ---------------------------------------------------------------------------------------------- settings
def test_decoding_settings_come_from_model_args_then_the_request(dlm):
    model, tokenizer = dlm
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, length_strategy="fixed", max_new_tokens=32,
                         threshold=None)
    assert lm.generation_config.length_strategy == "fixed" and lm.generation_config.threshold is None
    assert model.generation_config.length_strategy != "fixed"  # the model object's own config is left alone
    settings, until = lm.generation_settings(
        {"until": "\n\n", "max_gen_toks": 12, "do_sample": False, "length_strategy": "grow", "block_length": 4}
    )
    assert until == ["\n\n"]
    assert settings == {"temperature": 0.0, "length_strategy": "grow", "block_length": 4, "max_new_tokens": 12}
    assert lm.generation_settings({"until": ["x", "y"]}) == ({"max_new_tokens": 32}, ["x", "y"])
    assert lm.generation_settings({"do_sample": True})[0]["temperature"] == 1.0
    with pytest.raises(ValueError, match="num_beams.*length_strategy"):
        lm.generation_settings({"num_beams": 4})
    with pytest.raises(ValueError, match="temperature > 0"):
        lm.generation_settings({"do_sample": True, "temperature": 0.0})
    with pytest.raises(ValueError, match="one budget"):
        lm.generation_settings({"max_gen_toks": 8, "max_new_tokens": 9})


def test_bad_arguments_are_refused_with_advice(dlm, tmp_path):
    model, tokenizer = dlm
    with pytest.raises(ValueError, match=r"Unknown hf_dlm model_args \['num_beams'\]"):
        DiffusionLMEval(pretrained=model, tokenizer=tokenizer, num_beams=2)
    with pytest.raises(ValueError, match="integer batch_size"):
        DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size="auto")
    with pytest.raises(ValueError, match="mc_sampling"):
        DiffusionLMEval(pretrained=model, tokenizer=tokenizer, mc_sampling="sobol")
    with pytest.raises(ValueError, match="threshold"):
        DiffusionLMEval(pretrained=model, tokenizer=tokenizer, threshold=2.0)
    causal = tiny_causal_lm("gpt2", vocab_size=len(tokenizer))
    causal.save_pretrained(tmp_path / "causal")
    tokenizer.save_pretrained(tmp_path / "causal")
    with pytest.raises(ValueError, match="not a DiffusionLM.*--model hf"):
        DiffusionLMEval(pretrained=str(tmp_path / "causal"), device="cpu")
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="mask token"):
        lm.elbo([(ids(tokenizer, "ab") + [model.config.mask_token_id], ids(tokenizer, "c"))])


def test_stop_strings_cut_at_the_earliest_occurrence():
    assert cut_at_stop_strings("abc\n\nQuestion: x", ["Question:", "\n\n"]) == "abc"
    assert cut_at_stop_strings("abc", ["", "z"]) == "abc"


# ---------------------------------------------------------------------------------------------- end to end
def test_generate_until_task_scores_the_batched_diffusion_answers(checkpoint, tmp_path):
    settings = dict(length_strategy="grow", block_length=4)
    model = DiffusionLM.from_pretrained(checkpoint).eval()
    tokenizer = char_tokenizer()
    # Each prompt decoded alone: the batched, left-padded decode inside lm-eval must give the same answers.
    alone = []
    for prompt in PROMPTS:
        out = model.diffusion_generate(torch.tensor([ids(tokenizer, prompt)]), max_new_tokens=6, temperature=0.0,
                                       **settings)
        alone.append(tokenizer.decode(out[0, len(ids(tokenizer, prompt)) :], skip_special_tokens=True))
    targets = [alone[0], "zz", alone[2], "zz"]  # two right, two wrong
    tasks = generation_task(tmp_path, targets=targets)
    results = evaluate_locally("hf_dlm", tasks, ["tiny_gen"], batch_size=4, device="cpu",
                               model_args={"pretrained": str(checkpoint), **settings})
    assert results["results"]["tiny_gen"]["exact_match,none"] == 0.5
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in results["samples"]["tiny_gen"]}
    assert [answers[i] for i in range(4)] == [cut_at_stop_strings(a, ["\n"]) for a in alone]


def test_gen_kwargs_reach_the_decoder_and_until_cuts_the_answer(dlm, tmp_path):
    model, tokenizer = dlm
    sampled = dict(temperature=1.0, seed=7, length_strategy="grow", block_length=4)
    raw, raw_forwards = [], []
    for prompt in PROMPTS:
        out = model.diffusion_generate(torch.tensor([ids(tokenizer, prompt)]), max_new_tokens=8,
                                       return_dict_in_generate=True, **sampled)
        raw.append(tokenizer.decode(out.sequences[0, len(ids(tokenizer, prompt)) :], skip_special_tokens=True))
        raw_forwards.append(out.nfe)
    stop = raw[0][3]  # a character inside the first answer: the answer must be cut there
    tasks = generation_task(tmp_path, until=(stop,), max_gen_toks=8)
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=1, length_strategy="grow", block_length=4)
    results = evaluate_locally(lm, tasks, ["tiny_gen"], gen_kwargs="do_sample=True,temperature=1.0,seed=7")
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in results["samples"]["tiny_gen"]}
    assert [answers[i] for i in range(4)] == [cut_at_stop_strings(a, [stop]) for a in raw]
    assert len(answers[0]) <= 3 < len(raw[0])
    # The decoder's own record of each answer (before the text cut): `until` ended the rows early, each through
    # the token that completes the stop (one character here), saving forwards.
    stopped = [a.index(stop) + 1 if stop in a else len(ids(tokenizer, a)) for a in raw]
    assert sorted(r["length"] for r in lm.generation_records) == sorted(stopped)
    assert all(1 <= r["forwards"] and r["length"] <= 8 for r in lm.generation_records)
    assert sum(r["forwards"] for r in lm.generation_records) < sum(raw_forwards)


def test_multiple_choice_task_scores_with_the_exact_elbo(dlm, tmp_path):
    model, tokenizer = dlm
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=16)
    docs = [{"question": "2+2=", "choices": ["4", "5", "22"]}, {"question": "the sky is", "choices": ["blue", "red"]}]
    best = []
    for doc in docs:  # the split lm-eval makes: context = text, continuation = " " + choice
        scores = [exact_elbo(model, *lm._encode_pair(doc["question"], " " + c)) for c in doc["choices"]]
        best.append(max(range(len(scores)), key=scores.__getitem__))
        doc["scores"] = scores
    docs[0]["label"], docs[1]["label"] = best[0], 1 - best[1]  # one right, one wrong
    tasks = write_task(tmp_path / "tasks", "tiny_mc", [{k: d[k] for k in ("question", "choices", "label")}
                                                      for d in docs],
                       output_type="multiple_choice", doc_to_text="{{question}}", doc_to_choice="{{choices}}",
                       doc_to_target="label", metric_list=[{"metric": "acc"}])
    results = evaluate_locally(lm, tasks, ["tiny_mc"])
    assert results["results"]["tiny_mc"]["acc,none"] == 0.5
    for sample in results["samples"]["tiny_mc"]:
        loglikelihoods = [resp[0][0] for resp in sample["resps"]]
        assert loglikelihoods == pytest.approx(docs[sample["doc_id"]]["scores"], abs=1e-4)
        assert all(isinstance(resp[0][1], bool) for resp in sample["resps"])


# ---------------------------------------------------------------------------------------------- registration
def test_hf_dlm_is_registered_and_the_entry_point_resolves_to_it():
    assert get_model("hf_dlm") is DiffusionLMEval and get_model("hf-dlm") is DiffusionLMEval
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lm_eval.models"]
    # lm-eval releases with plugin discovery register such entry points as lazy registry placeholders.
    registry = Registry("model", base_cls=LM)
    for name, target in entry_points.items():
        registry.register(name, target=metadata.EntryPoint(name=name, value=target, group="lm_eval.models"))
    assert {name: registry.get(name) for name in entry_points} == {"hf_dlm": DiffusionLMEval, "hf-dlm": DiffusionLMEval}


def _environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return env


def _results(output: Path) -> dict:
    (path,) = output.glob("*/results_*.json")
    return json.loads(path.read_text())


def test_the_command_line_runs_a_local_task(checkpoint, tmp_path):
    tasks = generation_task(tmp_path)
    command = [sys.executable, "-m", "hf_dlm.integrations.lm_eval", "--model", "hf_dlm", "--model_args",
               f"pretrained={checkpoint},length_strategy=grow,block_length=4", "--tasks", "tiny_gen", "--include_path",
               str(tasks), "--device", "cpu", "--batch_size", "4", "--limit", "2", "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    results = _results(tmp_path / "out")
    assert results["n-samples"]["tiny_gen"]["effective"] == 2
    assert results["results"]["tiny_gen"]["exact_match,none"] == 0.0
    assert results["config"]["hf_dlm_decoding"]["length_strategy"] == "grow"  # --model_args reached the decoder
    assert results["config"]["hf_dlm_elbo"]["mc_num"] == 128
    assert "tokens per forward" in result.stderr  # our decoding summary, in lm-eval's log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_two_processes_under_accelerate_split_the_documents_and_gather_the_same_answers(checkpoint, tmp_path):
    model = DiffusionLM.from_pretrained(checkpoint).eval()
    tokenizer = char_tokenizer()
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, batch_size=8, length_strategy="grow", block_length=4)
    tasks = generation_task(tmp_path)
    single = {s["doc_id"]: s["filtered_resps"][0]
              for s in evaluate_locally(lm, tasks, ["tiny_gen"])["samples"]["tiny_gen"]}
    # CPU processes: --multi_gpu is accelerate's multi-process launcher; ACCELERATE_USE_CPU=1 makes it gloo on CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_free_port()), "-m", "hf_dlm.integrations.lm_eval", "--model", "hf_dlm", "--model_args",
               f"pretrained={checkpoint},length_strategy=grow,block_length=4", "--tasks", "tiny_gen",
               "--include_path", str(tasks), "--batch_size", "8", "--log_samples", "--output_path",
               str(tmp_path / "out")]
    result = subprocess.run(command, env=_environment() | {"ACCELERATE_USE_CPU": "1"}, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Building contexts for tiny_gen on rank 1" in result.stderr  # the second process took a share
    (samples,) = (tmp_path / "out").glob("*/samples_tiny_gen_*.jsonl")
    gathered = {s["doc_id"]: s["filtered_resps"][0] for s in map(json.loads, samples.read_text().splitlines())}
    assert gathered == single


@pytest.mark.ddp
def test_a_launch_that_accelerate_does_not_join_is_refused(checkpoint, tmp_path):
    """torchrun on CPUs without ACCELERATE_USE_CPU: accelerate sees one process, so every process would evaluate
    every document; the model refuses instead of duplicating the work."""
    script = tmp_path / "load.py"
    script.write_text(f"from hf_dlm.integrations.lm_eval import DiffusionLMEval\nDiffusionLMEval(pretrained={str(checkpoint)!r})\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(script)]
    env = {k: v for k, v in _environment().items() if k != "ACCELERATE_USE_CPU"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Launched as 2 processes, but accelerate joined 1" in result.stderr and "ACCELERATE_USE_CPU=1" in result.stderr


# ---------------------------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_default_diffusion_model_and_smollm2_run_the_same_local_tasks(tmp_path):
    """The comparison a user makes: one command for the embedded default diffusion model, one for SmolLM2 itself
    (lm-eval's own `hf` model on the GGUF), on the same local tasks. Cheap: a handful of documents."""
    from hf_dlm.default.smollm2 import find_smollm2_gguf

    directory, gguf = find_smollm2_gguf()
    common = ["--tasks", "hf_dlm_qa", "hf_dlm_choice", "--include_path", str(LOCAL_TASKS), "--device", "cpu",
              "--batch_size", "8", "--limit", "4", "--apply_chat_template"]
    runs = {
        "diffusion": [sys.executable, "-m", "hf_dlm.integrations.lm_eval", "--model", "hf_dlm", "--model_args",
                      "pretrained=hf_dlm:default"],
        "autoregressive": [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={directory},gguf_file={gguf},dtype=float32"],
    }
    env = _environment()
    env.pop("OMP_NUM_THREADS")
    for name, command in runs.items():
        result = subprocess.run(command + common + ["--output_path", str(tmp_path / name)], env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stderr[-3000:]
        results = _results(tmp_path / name)["results"]
        assert 0.0 <= results["hf_dlm_qa"]["contains_answer,none"] <= 1.0
        assert 0.0 <= results["hf_dlm_choice"]["acc,none"] <= 1.0
