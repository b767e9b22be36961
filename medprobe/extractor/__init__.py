"""The extraction pipeline: a dataset's images -> pooled per-layer activations committed to the store.

``plan`` asks the store what is still to do; ``loader`` decodes and preprocesses in DataLoader workers; ``runner``
forwards batches through an adapter (``medprobe.adapters``); ``writer`` commits segments; ``pipeline`` ties them
together (``extract``); ``single`` runs one file through a stored feature set's model (search). Scale-out lives in
``medprobe.engines``. Uses only the store's public API.
"""
