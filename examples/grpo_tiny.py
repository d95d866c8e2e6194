"""GRPO on CPU with a tiny model built on the spot, rewarded by sandboxed tests.

No hub access at all (``HF_HUB_OFFLINE=1``): the tokenizer is a byte-level BPE trained here on the
prompts and solutions, the model a 2-layer Llama with hidden size 32, briefly warmed up on the
reference solutions so that some samples pass and some fail. The dataset holds MBPP problems:
``prompt`` (text) and ``problem`` (the native schema as JSON, read by :class:`harness.CodeReward`).

Run::

    .venv/bin/python examples/grpo_tiny.py [--steps 2] [--out DIR]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run from a checkout (``python examples/grpo_tiny.py``): the repository's packages come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import rewards  # noqa: E402
from harness import AsyncCodeReward, CodeReward  # noqa: E402
from rewards import RewardConfig, load_problems, problem_to_dict, reference_solutions  # noqa: E402
from vmpool import Limits, PoolConfig  # noqa: E402

MBPP = Path(rewards.__file__).resolve().parent / "data" / "mbpp_sanitized.jsonl"
#: Short MBPP problems whose reference solutions fit in a few dozen tokens.
TASKS = ("MBPP/62", "MBPP/435", "MBPP/477", "MBPP/624")
EOS, PAD = "<eos>", "<pad>"


@dataclass
class TinyRun:
    """What :func:`main` did.

    Attributes:
        log_history: ``trainer.state.log_history`` (one dict per logged step).
        correct_rewards: our reward of each task's reference solution.
        wrong_rewards: our reward of a wrong solution of each task.
        seconds: wall time of the whole run.
    """

    log_history: list[dict[str, Any]]
    correct_rewards: list[float | None]
    wrong_rewards: list[float | None]
    seconds: float
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def build_rows(tasks: tuple[str, ...] = TASKS) -> list[dict[str, str]]:
    """Dataset rows: prompt, native problem JSON, task id, reference solution, a wrong solution."""
    problems = load_problems(MBPP).by_id()
    solutions = reference_solutions(MBPP)
    rows = []
    for task_id in tasks:
        problem = problems[task_id]
        prompt = f"# {problem.prompt}\n# {problem.tests.code[0]}\n"  # type: ignore[union-attr]
        rows.append({
            "prompt": prompt,
            "problem": json.dumps(problem_to_dict(problem)),
            "task_id": task_id,
            "solution": solutions[task_id].strip() + "\n",
            "wrong": "def f(x):\n    return None\n",
        })
    return rows


def build_tokenizer(texts: list[str]) -> Any:
    """A byte-level BPE trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="left")


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """A 2-layer Llama, hidden size 32, from a config (no weights downloaded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def warm_up(model: Any, tokenizer: Any, rows: list[dict[str, str]], steps: int, seed: int = 0) -> float:
    """Plain next-token training on prompt + solution, so that GRPO has something to sample."""
    import torch

    if steps <= 0:
        return float("nan")
    torch.manual_seed(seed)
    texts = [r["prompt"] + r["solution"] + EOS for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    return float(loss.detach())


def _completion_columns(trainer: Any) -> dict[str, list[Any]]:
    """The extra completion-table columns our reward logged (TRL keeps them in ``_logs["extra"]``)."""
    extra = getattr(trainer, "_logs", {}).get("extra", {})
    return {name: list(values) for name, values in extra.items()}


def main(steps: int = 2, output_dir: str | None = None, warmup_steps: int = 150, pool_size: int = 2,
         seed: int = 0, use_async: bool = False) -> TinyRun:
    """Train ``steps`` GRPO optimizer steps on CPU with :class:`harness.CodeReward`
    (:class:`harness.AsyncCodeReward` with ``use_async``).

    Returns:
        The trainer's log history and, for each task, the reward of the reference solution and of
        a wrong one (computed with the same reward function and dataset columns).
    """
    start = time.monotonic()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = build_rows()
    tokenizer = build_tokenizer([r["prompt"] + r["solution"] for r in rows])
    model = build_model(tokenizer, seed)
    sft_loss = warm_up(model, tokenizer, rows, warmup_steps, seed)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "problem": r["problem"], "task_id": r["task_id"]}
                                 for r in rows])

    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="grpo_tiny_")
        output_dir = tmp.name
    args = GRPOConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=32, learning_rate=1e-3, temperature=1.0, beta=0.0, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
        activation_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, seed=seed,
    )
    reward_cls = AsyncCodeReward if use_async else CodeReward
    reward = reward_cls(RewardConfig(kind="binary"), Limits(wall_s=5.0), PoolConfig(size=pool_size))
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        trainer.train()
        columns = {"problem": [r["problem"] for r in rows], "task_id": [r["task_id"] for r in rows]}
        prompts = [r["prompt"] for r in rows]
        check = CodeReward(reward.reward_config, reward.limits, pool=reward.pool)  # same warm pool, sync call
        correct = check(prompts=prompts, completions=[r["solution"] for r in rows], **columns)
        wrong = check(prompts=prompts, completions=[r["wrong"] for r in rows], **columns)
        return TinyRun(log_history=list(trainer.state.log_history), correct_rewards=correct, wrong_rewards=wrong,
                       seconds=time.monotonic() - start, steps=trainer.state.global_step,
                       extra={"sft_loss": sft_loss, "completion_columns": _completion_columns(trainer)})
    finally:
        reward.close()
        if tmp is not None:
            tmp.cleanup()


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=150, help="next-token warm-up steps before GRPO")
    parser.add_argument("--async", dest="use_async", action="store_true", help="use AsyncCodeReward")
    parser.add_argument("--out", default=None, help="trainer output dir (default: a temporary one)")
    ns = parser.parse_args()
    run = main(steps=ns.steps, output_dir=ns.out, warmup_steps=ns.warmup_steps, use_async=ns.use_async)
    for entry in run.log_history:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()
                 if k.startswith(("rewards/", "code/", "reward", "step", "loss"))}
        print(shown)
    print(f"reference solutions: {run.correct_rewards}  wrong solutions: {run.wrong_rewards}")
    print(f"{run.steps} steps in {run.seconds:.1f} s")


if __name__ == "__main__":
    _cli()
