"""Prompt faithfulness of a text-conditioned run, measured without any hub model.

Method (docs/eval.md, "Prompt faithfulness"):

1. Every image of the captioned data set has a label in captions.jsonl (``--label-key``,
   default ``group``: the emoji set's 9 Unicode groups). A fixed share of the images is held
   out by a hash of the file name (data/holdout.py: the run's ``data.holdout`` if it trained
   with one, so the model never saw those images or, where captions are unique, those captions).
2. A small CNN is trained from scratch on the *other* real images to predict the label.
3. It classifies the real held-out images: its balanced accuracy there (the mean of per-label
   recalls, because one emoji group is ~60% of the set) is what a perfect generator could get.
4. The run draws one image for each held-out caption (prompt = caption); the same classifier
   labels them. Faithfulness = balanced accuracy on generated / on real held-out images.

Two judges score the same images: the CNN above, and (when the caller gives the FID network's
``Reference`` of the data) a linear probe on the network's pool features trained on the same
real images (metrics/classifier.LinearProbe), a judge that colour and layout alone cannot
satisfy. Each reports balanced and plain accuracy, per-group rates, and the groups whose
prompted images never land in them. Groups come from captions.jsonl's label field, or from
the sub-folders under ``--captions folder``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .data.captions import CAPTIONS_FILE, read_groups
from .data.holdout import is_held_out
from .errors import Conflict, DataError, InternalError
from .metrics.classifier import LinearProbe, balanced_batches, fit_classifier, to_signed_unit

log = logging.getLogger(__name__)

DEFAULT_HOLDOUT = 0.1


def read_labels(root: str | Path, names: list[str], key: str, mode: str = "auto") -> list[str | None]:
    """The ``key`` field of each image's captions.jsonl record (None where it has none); under
    ``mode == "folder"`` (or ``key == "folder"``) each image's sub-folder (data.captions.read_groups)."""
    path = Path(root) / CAPTIONS_FILE
    by_folder = mode == "folder" or key == "folder"
    if not by_folder and not path.is_file():
        raise FileNotFoundError(f"{path}: prompt faithfulness needs captions.jsonl with a {key!r} field")
    labels = read_groups(str(root), names, key, "folder" if by_folder else "jsonl")
    if sum(lab is not None for lab in labels) < 2:
        where = f"{root}: no sub-folders" if by_folder else f"{path}: no {key!r} labels"
        raise DataError(f"{where} for the images; choose another --label-key")
    return labels


class LabelNet(nn.Module):
    """A small CNN for 16-128 px images: 4 conv blocks, global average pool, linear."""

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Roll the batch by up to 2 px along each axis: light augmentation."""
    shift = torch.randint(-2, 3, (2,), generator=g).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3))


def train_classifier(
    images: Tensor, labels: Tensor, n_classes: int, epochs: int = 15, seed: int = 0, batch: int = 64
) -> LabelNet:
    """Fit LabelNet on uint8 images (N, 3, H, W) with class-balanced batches (so the big group
    does not drown the small ones) and 2-px shifts as light augmentation."""
    steps = epochs * max(len(labels) // batch, 1)
    return fit_classifier(
        lambda: LabelNet(n_classes),
        images,
        labels,
        steps,
        lambda g: balanced_batches(labels, n_classes, batch, steps, g),
        _shift,
        seed=seed,
    )


@torch.no_grad()
def predict(net: LabelNet, images: Tensor, chunk: int = 256) -> Tensor:
    return torch.cat(
        [net(to_signed_unit(images[i : i + chunk])).argmax(1) for i in range(0, len(images), chunk)]
    )


def balanced_accuracy(pred: Tensor, true: Tensor) -> float:
    """Mean over the labels present in ``true`` of the share predicted right (recall)."""
    recalls = [float((pred[true == c] == c).float().mean()) for c in true.unique()]
    return sum(recalls) / len(recalls)


def judge_scores(real_pred: Tensor, gen_pred: Tensor, true: Tensor, classes: list[str]) -> dict[str, Any]:
    """One judge's verdicts on the real held-out images and on the images drawn from their
    captions (both (n,) class indices against ``true``): balanced and plain accuracy of each,
    their ratios, per-group rates ({group: {"n", "real", "generated", "ratio"}}) and the groups
    whose prompted images never land in them though real ones do (``never_drawn``)."""
    real_bal, gen_bal = balanced_accuracy(real_pred, true), balanced_accuracy(gen_pred, true)
    real_acc = float((real_pred == true).float().mean())
    gen_acc = float((gen_pred == true).float().mean())
    per_group: dict[str, dict[str, Any]] = {}
    for c in true.unique().tolist():
        mine = true == c
        real_rate = float((real_pred[mine] == c).float().mean())
        gen_rate = float((gen_pred[mine] == c).float().mean())
        per_group[classes[c]] = {
            "n": int(mine.sum()),
            "real": round(real_rate, 4),
            "generated": round(gen_rate, 4),
            "ratio": round(gen_rate / real_rate, 4) if real_rate > 0 else None,
        }
    return {
        "real_balanced_accuracy": round(real_bal, 4),
        "generated_balanced_accuracy": round(gen_bal, 4),
        "ratio": round(gen_bal / real_bal, 4) if real_bal > 0 else None,
        "real_accuracy": round(real_acc, 4),
        "generated_accuracy": round(gen_acc, 4),
        "accuracy_ratio": round(gen_acc / real_acc, 4) if real_acc > 0 else None,
        "per_group": per_group,
        "never_drawn": [g for g, v in per_group.items() if v["generated"] == 0 and v["real"] > 0],
    }


def _check_classes(root: str | Path, key: str, classes: list[str], held: set[str | None]) -> None:
    """Refuse a score that cannot mean anything: with one label every image, drawn or real,
    gets it, so any model (even one drawing noise) scores 1.0 / 1.0."""
    if len(classes) < 2:
        raise DataError(
            f"{root}: every labelled image has the same {key!r} ({classes[0]!r}), so prompt faithfulness "
            f"cannot mean anything (one class: any image is classified right); evaluate on data with "
            f"at least two {key!r} values, or choose another --faithfulness key"
        )
    if len(held) < 2:
        raise DataError(
            f"{root}: the held-out images all have the same {key!r} ({next(iter(held))!r}), so prompt "
            "faithfulness cannot mean anything (one class); evaluate on a larger data set"
        )


def prompt_faithfulness(
    run: Any,
    images: Tensor,
    names: list[str],
    root: str | Path,
    *,
    label_key: str = "group",
    captions_mode: str = "auto",
    seed: int = 0,
    epochs: int = 15,
    reference: Any = None,
    **sample_options: Any,
) -> dict[str, Any]:
    """The method in the module docstring; ``images`` are the data at the run's size.

    ``reference`` (a metrics.reference.Reference of exactly ``images``) adds the linear-probe
    judge on its features. The top-level accuracy keys are the CNN's (as before the probe);
    ``judges`` holds each judge's full ``judge_scores``.
    """
    from .data.captions import read_captions
    from .sample import generate, latents_for_seed

    if not getattr(run.model, "conditional", False):
        raise Conflict(f"{run.path}: prompt faithfulness needs a text-conditioned run (--text-encoder)")
    share = run.config.data.holdout or DEFAULT_HOLDOUT
    labels = read_labels(root, names, label_key, captions_mode)
    captions = read_captions(str(root), names, captions_mode).texts  # type: ignore[arg-type]
    classes = sorted({lab for lab in labels if lab is not None})
    index = {c: i for i, c in enumerate(classes)}
    held = [i for i, n in enumerate(names) if is_held_out(n, share) and labels[i] is not None and captions[i]]
    train = [i for i, n in enumerate(names) if not is_held_out(n, share) and labels[i] is not None]
    if len(held) < 2 or len(train) < 2:
        raise DataError(f"{root}: too few labelled images to hold out {share:.0%} (found {len(names)})")
    _check_classes(root, label_key, classes, {labels[i] for i in held})
    y = torch.tensor([index[lab] if lab is not None else -1 for lab in labels])
    net = train_classifier(images[train], y[train], len(classes), epochs=epochs, seed=seed)
    prompts = [captions[i] for i in held]
    z = latents_for_seed(run.model, len(held), seed)
    fakes = (generate(run.model, z, prompt=prompts, **sample_options) * 255).round().to(torch.uint8)
    judges = {"cnn": judge_scores(predict(net, images[held]), predict(net, fakes), y[held], classes)}
    if reference is not None:
        if len(reference) != len(images):
            raise InternalError(f"the reference holds {len(reference)} images, the data {len(images)}")
        feats = torch.from_numpy(reference.features)  # (N, 2048)
        probe = LinearProbe(feats[train], y[train], len(classes))
        fake_feats = torch.from_numpy(reference.features_of(fakes, desc="features: prompted"))
        judges["inception_probe"] = judge_scores(
            probe.predict(feats[held]), probe.predict(fake_feats), y[held], classes
        )
    cnn = judges["cnn"]
    return {
        "label_key": "folder" if captions_mode == "folder" else label_key,
        "n_classes": len(classes),
        "n_train_real": len(train),
        "n_heldout": len(held),
        "holdout": share,
        "captions_held_out_in_training": bool(run.config.data.holdout),
        "classifier_epochs": epochs,
        "real_balanced_accuracy": cnn["real_balanced_accuracy"],
        "generated_balanced_accuracy": cnn["generated_balanced_accuracy"],
        "ratio": cnn["ratio"],
        "judges": judges,
    }
