"""The DKT reference model in PyTorch (training, export and the benchmark's eager baseline).

Importing this module requires torch (the ``train`` extra); the daemon never imports it.
Input at step t is the pair (skill, correct) as one embedding row ``2*skill + correct``; the LSTM state
after step t predicts, for every skill, the probability that the next answer on it is correct.
"""

from __future__ import annotations

import torch
from torch import nn


class DKT(nn.Module):
    def __init__(self, n_skills: int, hidden: int = 96, embed: int = 64) -> None:
        super().__init__()
        self.n_skills = n_skills
        self.hidden = hidden
        self.embed = nn.Embedding(2 * n_skills, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_skills)

    def forward(self, skill: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """skill, correct: [batch, time] int64 -> probabilities [batch, time, n_skills]."""
        x = self.embed(skill * 2 + correct)
        h, _ = self.lstm(x)
        return torch.sigmoid(self.out(h))

    def logits(self, skill: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(skill * 2 + correct))
        return self.out(h)


class DKTStep(nn.Module):
    """One answer at a time with explicit state: the same weights as :class:`DKT`, as an LSTM cell."""

    def __init__(self, model: DKT) -> None:
        super().__init__()
        self.embed = model.embed
        self.cell = nn.LSTMCell(model.embed.embedding_dim, model.hidden)
        # nn.LSTM and nn.LSTMCell share the gate layout (i, f, g, o), so the weights copy over as they are
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(model.lstm, f"{name}_l0"))
        self.out = model.out

    def forward(
        self, skill: torch.Tensor, correct: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """skill, correct: [batch] int64; h, c: [batch, hidden] -> (probs [batch, skills], h', c')."""
        h2, c2 = self.cell(self.embed(skill * 2 + correct), (h, c))
        return torch.sigmoid(self.out(h2)), h2, c2
