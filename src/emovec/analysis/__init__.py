"""Validation of emotion vectors against the paper (§4): one module per analysis.

- `geometry`: cosine matrix in clustering order, k-means vs the paper's clusters, PCA, RSA across layers
- `norms`: alignment of PC1/PC2 with human (Warriner 2013) and model-judge valence/arousal ratings
- `probes`: number templates and implicit scenarios read at the assistant-turn start
- `logit_lens`: tokens each vector promotes/suppresses through the final norm and unembedding
- `top_passages`: top-activating windows of a streamed corpus
- `layers`: every metric per layer and a recommended layer
- `suite`: all of the above in one call (`run_analysis`); `section`/`figures`: the report's HTML;
  `commands`: the `emovec analyze` and `emovec report` commands

Submodules are imported on use (this file imports nothing), so `emovec --help` stays fast.
"""
