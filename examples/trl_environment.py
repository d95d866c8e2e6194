"""Multi-turn GRPO with :class:`harness.CodeEnvironment`: the model calls python, bash and submit tools
in sandboxed sessions, and each rollout is graded on hidden tests in a fresh grading sandbox.

With a real model it is just::

    from trl import GRPOConfig, GRPOTrainer
    from harness import CodeEnvironment, CodeEnvironmentGrader

    trainer = GRPOTrainer(
        model="Qwen/Qwen3-0.6B",              # any model whose chat template TRL can parse tool calls from
        train_dataset=dataset,                # rows: {"prompt": [{"role": "user", "content": ...}], "problem": ...}
        environment_factory=CodeEnvironment,  # one session per rollout
        reward_funcs=[CodeEnvironmentGrader()],  # optional: batch grading + code/* and env/* metrics
        args=GRPOConfig(max_completion_length=2048, max_tool_calling_iterations=8, ...),
    )
    trainer.train()

This script does the same on CPU, offline (``HF_HUB_OFFLINE=1``): the tokenizer is a byte-level BPE
trained here with TRL's Qwen2.5 chat template (so TRL parses its tool calls), the model a 2-layer Llama
built from a config. A model that small cannot call tools by chance, so it is first fitted for a few
optimizer steps on tool-call transcripts recorded in real sessions (``python`` to try the solution,
``submit`` to hand it in); then GRPO runs, its tool calls executing in sessions.

Run::

    .venv/bin/python examples/trl_environment.py [--steps 2] [--out DIR]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run from a checkout (``python examples/trl_environment.py``): the repository's packages come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is experimental in TRL

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import rewards  # noqa: E402
from harness import CodeEnvironment, CodeEnvironmentGrader, close_environments, environment_stats  # noqa: E402
from rewards import load_problems, problem_to_dict  # noqa: E402

MBPP = Path(rewards.__file__).resolve().parent / "data" / "mbpp_sanitized.jsonl"
INSTRUCTION = "Solve the task with the tools, then submit."
#: A task of our own (call tests) and one from the bundled MBPP slice (assert tests).
ADD = {"task_id": "add", "prompt": "Write a function add(a, b) that returns the sum of a and b.",
       "entry_point": "add", "tests": {"kind": "call", "fn_name": "add", "cases": [
           {"args": [2, 3], "expected": 5}, {"args": [-1, 1], "expected": 0}, {"args": [10, 5], "expected": 15}]}}
#: (solution, a line that tries it) per task, what the fitted transcripts do.
SOLUTIONS = {
    "add": ("def add(a, b):\n    return a + b\n", "print(add(2, 3))"),
    "MBPP/62": ("def smallest_num(xs):\n    return min(xs)\n", "print(smallest_num([3, 1, 2]))"),
}
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]


@dataclass
class EnvRun:
    """What :func:`main` did.

    Attributes:
        log_history: ``trainer.state.log_history`` (one dict per logged step).
        completions: the logged rollouts (chat messages: assistant turns and tool results).
        stats: :func:`harness.environment_stats` after training (``python_calls``: calls that ran in a session).
        leased_after: sessions still leased once training ended (0: none leaked).
        fit_loss: the loss at the end of the fit on transcripts.
        steps: GRPO steps done.
        seconds: wall time of the whole run.
    """

    log_history: list[dict[str, Any]]
    completions: list[Any]
    stats: dict[str, int]
    leased_after: int
    fit_loss: float
    steps: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def build_rows() -> list[dict[str, Any]]:
    """Dataset rows: a conversational prompt (the task text comes from ``reset``) and the problem."""
    mbpp = problem_to_dict(load_problems(MBPP).by_id()["MBPP/62"])
    return [{"prompt": [{"role": "user", "content": INSTRUCTION}], "problem": json.dumps(problem),
             "task_id": problem["task_id"]} for problem in (ADD, mbpp)]


def environment_tools(env: Any) -> list[Any]:
    """The environment's tools, as TRL finds them (public methods but reset/get_reward, by name)."""
    return [getattr(env, name) for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]


def record_transcript(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Play the reference episode of a row in a real session; return it as chat messages.

    The first user message is the row's prompt with ``reset``'s task text appended, as TRL builds it.
    """
    solution, trial = SOLUTIONS[row["task_id"]]
    env = CodeEnvironment()
    user = row["prompt"][-1]["content"] + env.reset(**row)

    def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
        output = getattr(env, name)(**arguments)
        return [{"role": "assistant", "content": "",
                 "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]},
                {"role": "tool", "name": name, "content": output}]

    messages = [{"role": "user", "content": user}]
    messages += call("python", code=solution + trial)
    messages += call("submit", code=solution)
    messages.append({"role": "assistant", "content": "Done."})
    reward = env.get_reward()
    if reward != 1.0:
        raise RuntimeError(f"the reference episode of {row['task_id']} got reward {reward}")
    return messages


def build_tokenizer(texts: list[str]) -> Any:
    """A byte-level BPE trained on ``texts``, with TRL's Qwen2.5 chat template (tool calling)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts or ["x"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                        padding_side="left")
    tokenizer.chat_template = qwen2_5_chat_template
    return tokenizer


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """A 2-layer Llama, hidden size 64, from a config (no weights downloaded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def fit_on_transcripts(model: Any, tokenizer: Any, transcripts: list[list[dict[str, Any]]], tools: list[Any],
                       steps: int, seed: int = 0) -> float:
    """Next-token training on the transcripts rendered by the chat template (with the tools' schema),
    the loss on everything after the first assistant header, so the model learns to call the tools."""
    import torch

    torch.manual_seed(seed)
    rows = []
    for messages in transcripts:
        prompt = tokenizer.apply_chat_template(messages[:1], tools=tools, add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)
        if full[:len(prompt)] != prompt:
            raise RuntimeError("the chat template does not render the prompt as a prefix of the conversation")
        rows.append((full, len(prompt)))
    width = max(len(full) for full, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (full, n_prompt) in enumerate(rows):
        ids[i, :len(full)] = torch.tensor(full)
        labels[i, n_prompt:len(full)] = torch.tensor(full[n_prompt:])
        mask[i, :len(full)] = 1
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        if loss.item() < 0.01:
            break
    return float(loss.detach())


def main(steps: int = 2, output_dir: str | None = None, fit_steps: int = 300, seed: int = 0) -> EnvRun:
    """Fit the tiny model on transcripts, then train ``steps`` GRPO steps with ``CodeEnvironment``."""
    start = time.monotonic()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = build_rows()
    transcripts = [record_transcript(row) for row in rows]
    probe = CodeEnvironment()
    tools = environment_tools(probe)
    rendered = build_tokenizer(["x"])
    texts = [rendered.apply_chat_template(t, tools=tools, tokenize=False) for t in transcripts]
    tokenizer = build_tokenizer(texts)
    model = build_model(tokenizer, seed)
    fit_loss = fit_on_transcripts(model, tokenizer, transcripts, tools, fit_steps, seed)

    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="trl_environment_")
        output_dir = tmp.name
    args = GRPOConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=256, max_tool_calling_iterations=4, learning_rate=1e-4, temperature=1.0,
        beta=0.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
        activation_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, seed=seed,
    )
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=[CodeEnvironmentGrader()], args=args,
                              train_dataset=Dataset.from_list(rows * 4), processing_class=tokenizer,
                              environment_factory=CodeEnvironment)
        trainer.train()
        stats = environment_stats()
        return EnvRun(log_history=list(trainer.state.log_history),
                      completions=list(getattr(trainer, "_logs", {}).get("completion", [])),
                      stats=stats, leased_after=stats["sessions_leased"], fit_loss=fit_loss,
                      steps=trainer.state.global_step, seconds=time.monotonic() - start)
    finally:
        close_environments()
        if tmp is not None:
            tmp.cleanup()


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps")
    parser.add_argument("--fit-steps", type=int, default=300, help="most steps of the fit on tool-call transcripts")
    parser.add_argument("--out", default=None, help="trainer output dir (default: a temporary one)")
    ns = parser.parse_args()
    run = main(steps=ns.steps, output_dir=ns.out, fit_steps=ns.fit_steps)
    for entry in run.log_history:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()
                 if k.startswith(("rewards/", "code/", "env/", "tools/", "reward", "step"))}
        print(shown)
    print(f"session calls: {run.stats}; sessions leased after training: {run.leased_after}")
    print(f"fit loss {run.fit_loss:.4f}; {run.steps} GRPO steps in {run.seconds:.1f} s")


if __name__ == "__main__":
    _cli()
