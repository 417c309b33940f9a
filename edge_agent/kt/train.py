"""Train a DKT model, report held-out AUC, export the two ONNX graphs (requires torch: ``train`` extra).

``train_model`` fits the LSTM on padded batches; ``evaluate`` scores next-answer predictions of held-out
students; ``export_onnx`` writes ``kt_sequence.onnx`` (dynamic batch and time) and ``kt_step.onnx``
(one answer with explicit LSTM state, dynamic batch). The legacy TorchScript exporter (``dynamo=False``)
is used on purpose: it maps ``nn.LSTM`` to the ONNX LSTM op with a dynamic sequence axis, which a test
checks with two sequence lengths.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_agent.kt.metrics import accuracy, auc
from edge_agent.kt.model import DKT, DKTStep

log = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True)
class TrainOptions:
    hidden: int = 96
    embed: int = 64
    epochs: int = 10
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0
    max_len: int = 200  # longer sequences are cut into windows of this length
    # Training stops after this many epochs without a better AUC on validation students (a share of the
    # training students, set aside): a fixed count overfits (a review: 300 skills, 20 epochs, AUC 0.758
    # against 0.774 at 10, the oracle's 0.798). The epochs above are the most it runs.
    patience: int = 2
    validation_share: float = 0.1
    # DKT+ (Yeung & Yeung, L@S 2018), with their values for simulated data: plain DKT's figure for the
    # skill just answered is never trained (only the next answer's skill is), and it fell after a right
    # answer in 6.0 % of a review's 72,493 steps (up to 0.18; 62 % on a data set whose exercises do not
    # repeat). ``reconstruction`` weighs the loss of each answer predicted from the output after it;
    # ``waviness_l1`` / ``waviness_l2`` the change of the whole output from one step to the next.
    reconstruction: float = 0.1
    waviness_l1: float = 0.003
    waviness_l2: float = 3.0


def _windows(seqs: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    return [
        s[i : i + max_len] for s in seqs for i in range(0, len(s), max_len) if len(s[i : i + max_len]) >= 2
    ]


def _pad(batch: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in batch)
    out = np.zeros((len(batch), length), dtype=np.int64)
    mask = np.zeros((len(batch), length), dtype=bool)
    for i, s in enumerate(batch):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def _next_step(model: DKT, sk: torch.Tensor, co: torch.Tensor) -> torch.Tensor:
    """Logits for each answer from t=1 on, given the answers before it."""
    logits = model.logits(sk, co)[:, :-1]
    return logits.gather(2, sk[:, 1:].unsqueeze(-1)).squeeze(-1)


def _loss(
    model: DKT, sk: torch.Tensor, co: torch.Tensor, mask: torch.Tensor, opts: TrainOptions
) -> torch.Tensor:
    """The next answers' cross-entropy, plus DKT+'s terms (TrainOptions) where weighed."""
    bce = nn.BCEWithLogitsLoss(reduction="none")
    logits = model.logits(sk, co)  # [batch, time, skills]: after each answer
    nxt, m = logits[:, :-1].gather(2, sk[:, 1:].unsqueeze(-1)).squeeze(-1), mask[:, 1:].float()
    loss = (bce(nxt, co[:, 1:].float()) * m).sum() / m.sum()
    if opts.reconstruction:
        own, every = logits.gather(2, sk.unsqueeze(-1)).squeeze(-1), mask.float()
        loss = loss + opts.reconstruction * (bce(own, co.float()) * every).sum() / every.sum()
    if opts.waviness_l1 or opts.waviness_l2:
        p = torch.sigmoid(logits)
        step = (p[:, 1:] - p[:, :-1]) * m.unsqueeze(-1)
        per = m.sum() * p.shape[-1]
        loss = loss + opts.waviness_l1 * step.abs().sum() / per + opts.waviness_l2 * step.pow(2).sum() / per
    return loss


def train_model(
    skills: list[np.ndarray], correct: list[np.ndarray], n_skills: int, opts: TrainOptions
) -> DKT:
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    validation: list[int] = []
    if opts.validation_share > 0 and len(skills) >= 20:  # by student, as the held-out split
        shuffled = rng.permutation(len(skills))
        validation = sorted(shuffled[: max(2, round(len(skills) * opts.validation_share))].tolist())
        chosen = set(validation)
        skills, correct, val_s, val_c = (
            [s for i, s in enumerate(skills) if i not in chosen],
            [c for i, c in enumerate(correct) if i not in chosen],
            [skills[i] for i in validation],
            [correct[i] for i in validation],
        )
    sk_w, co_w = _windows(skills, opts.max_len), _windows(correct, opts.max_len)
    model = DKT(n_skills, opts.hidden, opts.embed)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    for epoch in range(opts.epochs):
        model.train()
        total, count = 0.0, 0
        for start in range(0, len(sk_w), opts.batch):
            order = range(start, min(start + opts.batch, len(sk_w)))
            sk, mask = _pad([sk_w[i] for i in order])
            co, _ = _pad([co_w[i] for i in order])
            loss = _loss(model, sk, co, mask, opts)
            m = mask[:, 1:].float()
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            total += loss.item() * float(m.sum())
            count += int(m.sum())
        perm = rng.permutation(len(sk_w))
        sk_w, co_w = [sk_w[i] for i in perm], [co_w[i] for i in perm]
        if not validation:
            log.info("epoch %s: training loss %.4f", epoch + 1, total / max(count, 1))
            continue
        model.eval()
        try:
            score = evaluate(model, val_s, val_c)["auc"]
        except ValueError:  # validation answers all right (or all wrong): no AUC to go by
            validation = []
            continue
        log.info("epoch %s: training loss %.4f, validation AUC %.4f", epoch + 1, total / max(count, 1), score)
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= opts.patience:
            log.info("stopped after epoch %s: no better validation AUC since %s", epoch + 1, best[1] + 1)
            break
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return model


def predict_next(model: DKT, skills: list[np.ndarray], correct: list[np.ndarray]) -> list[np.ndarray]:
    """Per student, the predicted probability of each answer from the second on."""
    out = []
    with torch.no_grad():
        for start in range(0, len(skills), 256):
            batch_s, batch_c = skills[start : start + 256], correct[start : start + 256]
            sk, _ = _pad(batch_s)
            co, _ = _pad(batch_c)
            p = torch.sigmoid(_next_step(model, sk, co)).numpy()
            out += [p[i, : len(s) - 1] for i, s in enumerate(batch_s)]
    return out


def evaluate(model: DKT, skills: list[np.ndarray], correct: list[np.ndarray]) -> dict[str, float]:
    preds = np.concatenate(predict_next(model, skills, correct))
    labels = np.concatenate([c[1:] for c in correct])
    return {"auc": auc(labels, preds), "accuracy": accuracy(labels, preds), "answers": float(labels.size)}


def prior_success(model: DKT) -> list[float]:
    """Predicted success on every skill before a student's first answer (zero LSTM state)."""
    with torch.no_grad():
        return [float(v) for v in torch.sigmoid(model.out.bias).tolist()]


def export_onnx(model: DKT, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    seq_path, step_path = out_dir / "kt_sequence.onnx", out_dir / "kt_step.onnx"
    sk = torch.zeros((2, 5), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the legacy exporter warns about batch_first LSTM; the test checks it
        torch.onnx.export(
            model,
            (sk, sk.clone()),
            str(seq_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["skill", "correct"],
            output_names=["probs"],
            dynamic_axes={
                "skill": {0: "batch", 1: "time"},
                "correct": {0: "batch", 1: "time"},
                "probs": {0: "batch", 1: "time"},
            },
        )
        step = DKTStep(model).eval()
        one = torch.zeros(2, dtype=torch.int64)
        state = torch.zeros((2, model.hidden))
        torch.onnx.export(
            step,
            (one, one.clone(), state, state.clone()),
            str(step_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["skill", "correct", "h", "c"],
            output_names=["probs", "h_out", "c_out"],
            dynamic_axes={
                name: {0: "batch"} for name in ("skill", "correct", "h", "c", "probs", "h_out", "c_out")
            },
        )
    return seq_path, step_path
