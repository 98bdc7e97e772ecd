"""What a run needs from its surroundings: versions, the git commit, and the GPT-2 trunk forward.

The loop stamps every ``run_started`` with :func:`versions` and :func:`git_commit` so a run can be
reproduced from what the registry stores. These live here, not in the CLI, because the loop (and
the worker that calls it) must not import the command-line layer. :func:`trunk` is the one place
that picks the lean GPT-2 forward (:mod:`rlhfkit.fastgpt2`) or falls back to transformers', shared
by the policy, its critic and the frozen reference.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch
from transformers import GPT2Model

from rlhfkit import fastgpt2


def package_version() -> str:
    """rlhfkit's installed version, or ``dev`` from a source checkout."""
    try:
        from importlib.metadata import version

        return version("rlhfkit")
    except Exception:
        return "dev"


def versions() -> dict[str, str]:
    """The versions that decide a run's numbers: rlhfkit, torch, transformers, Python."""
    import transformers

    return {"rlhfkit": package_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def git_commit() -> str | None:
    """HEAD of the checkout rlhfkit runs from, or None outside git (an installed wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability in ``model`` to 0, in its modules and its config (as TRL does).

    RL needs log π(a|s) to be a function: with dropout on in train mode the ratio π/π_old is not 1
    before any update, and some tokens start outside the clip range. Zeroing the config too lets
    :func:`rlhfkit.fastgpt2.supports` keep the lean forward on. Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        cfg = getattr(m, "config", None)
        for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"):
            if cfg is not None and getattr(cfg, key, None):
                setattr(cfg, key, 0.0)
    return model


def trunk(transformer: GPT2Model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
          position_ids: torch.Tensor, *, start: int = 0, prefix_len: int = 0) -> torch.Tensor:
    """Last hidden state (B, T - start, D): the lean forward of :mod:`rlhfkit.fastgpt2` when it
    applies (eval-mode-equivalent modules, no dropout), transformers' forward otherwise.

    ``prefix_len``: the first columns hold a prompt that rows may share; the lean forward runs each
    distinct prompt once (:func:`rlhfkit.fastgpt2.hidden_states`), transformers' forward ignores it.
    """
    if fastgpt2.supports(transformer):
        return fastgpt2.hidden_states(transformer, input_ids, attention_mask, position_ids, start=start,
                                      prefix_len=prefix_len)
    return transformer(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids).last_hidden_state[:, start:]


__all__ = ["disable_dropout", "git_commit", "package_version", "trunk", "versions"]
