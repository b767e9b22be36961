"""The extractor: a dataset's images -> pooled per-layer activations committed to the store.

``loading`` turns a model spec into an adapter (``models/`` for Hugging Face families, ``plugins/`` for plain torch
encoders); ``plan`` asks the store what is still to do; ``loader`` decodes and preprocesses in DataLoader workers;
``runner`` forwards batches; ``writer`` commits segments; ``pipeline`` ties them together (``extract``);
``jobs``/``worker``/``status`` are the single-machine queue. Uses only the store's public API.
"""
