"""Lexical baselines: emotion vectors that know only the emotion's word, not any story.

- `embedding_vectors`: each emotion word's input embedding (mean over its tokens), no forward pass;
- `template_vectors`: the residual at one layer for short word templates ("I feel {emotion}."), at the last
  token and averaged over tokens, averaged over templates.
Both are centred over emotions (as the story vectors are) and the template vectors get the artifact's
neutral projection at that layer, so a geometry number they reach is one a word list alone explains.
- `word_contrast_vectors`: the same template sentences (mean over tokens) minus the same templates filled with
  neutral words, at one layer: the steering-validation's "word-contrast" variant (a vector that knows the
  word, not the stories).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emovec.analysis.decode import unit_rows
from emovec.hooks import forward_layers, pad_batch
from emovec.models import LoadedModel
from emovec.vectors import project_out

TEMPLATES = ("I feel {emotion}.", "She felt {emotion}.", "He was so {emotion}.", "Today I am feeling {emotion}.")
NEUTRAL_WORDS = ("awake", "seated", "indoors", "dressed")  # fill the templates for the word-contrast baseline


def word_ids(lm: LoadedModel, word: str) -> list[int]:
    """Token ids of ` word` (leading space: the word as it appears mid-sentence), without special tokens."""
    ids = lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return [int(i) for i in ids] or [int(i) for i in lm.encode(word)]


def input_embeddings(lm: LoadedModel) -> np.ndarray:
    """The model's input-embedding matrix [vocab, hidden] as float32."""
    return lm.model.get_input_embeddings().weight.detach().float().cpu().numpy()  # type: ignore[operator]


def embedding_vectors(lm: LoadedModel, emotions: Sequence[str]) -> np.ndarray:
    """Unit, emotion-centred mean input embedding of each emotion word [E, d]."""
    table = input_embeddings(lm)
    m = np.stack([table[word_ids(lm, e)].mean(0) for e in emotions]).astype(np.float64)
    return unit_rows(m - m.mean(0, keepdims=True))


def pooled_layer(lm: LoadedModel, texts: Sequence[str], layer: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Residual at `layer` per text: at the last token, and the mean over tokens from position 1 on."""
    tokens = [lm.encode(t) for t in texts]
    last = np.zeros((len(texts), lm.spec.hidden_size))
    mean = np.zeros_like(last)
    for s in range(0, len(tokens), batch_size):
        rows = list(range(s, min(s + batch_size, len(tokens))))
        batch = pad_batch([tokens[i] for i in rows], rows, lm.pad_id, side="right")
        seen: dict[int, torch.Tensor] = {}
        forward_layers(lm, batch, [layer], lambda _l, h, seen=seen: seen.__setitem__(0, h.double().cpu()))
        h = seen[0]
        lengths = batch.lengths
        mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]) & (torch.arange(h.shape[1])[None, :] >= 1)
        last[rows] = h[torch.arange(len(rows)), lengths - 1].numpy()
        mean[rows] = ((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)).numpy()
    return last, mean


def template_vectors(lm: LoadedModel, emotions: Sequence[str], layer: int, components: np.ndarray,
                     templates: Sequence[str] = TEMPLATES) -> dict[str, np.ndarray]:
    """Unit word-template vectors at `layer` [E, d]: `template_last` and `template_mean`."""
    texts = [t.format(emotion=e) for e in emotions for t in templates]
    last, mean = pooled_layer(lm, texts, layer)
    out = {}
    for name, acts in (("template_last", last), ("template_mean", mean)):
        per = acts.reshape(len(emotions), len(templates), -1).mean(1)
        out[name] = unit_rows(project_out(per - per.mean(0, keepdims=True), components))
    return out


def word_contrast_vectors(lm: LoadedModel, emotions: Sequence[str], layer: int,
                          templates: Sequence[str] = TEMPLATES, neutral: Sequence[str] = NEUTRAL_WORDS) -> np.ndarray:
    """Unit word-contrast vectors at `layer` [E, d]: the mean residual (over tokens, then templates) of the
    templates filled with each emotion word minus that of the templates filled with neutral words."""
    texts = [t.format(emotion=e) for e in emotions for t in templates]
    base = [t.format(emotion=w) for w in neutral for t in templates]
    _, mean = pooled_layer(lm, texts + base, layer)
    per = mean[:len(texts)].reshape(len(emotions), len(templates), -1).mean(1)
    return unit_rows(per - mean[len(texts):].mean(0, keepdims=True))
