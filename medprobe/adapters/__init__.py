"""Models as their own package: a model spec -> a loaded :class:`~medprobe.adapters.adapter.Adapter`.

``loading`` parses a spec once (:class:`~medprobe.adapters.loading.ModelSpec`) and dispatches on its backend;
``models/`` holds the Hugging Face families (registered with ``register_family``), the timm and open_clip
encoders; ``plugins/`` plain torch encoders (entry point ``medprobe.models``); ``contrastive`` the CLIP-family
text towers; ``weights`` safetensors / pickle loading; ``catalog`` what can be loaded. An adapter declares its
capabilities (pooled layer features, text embeddings, option scoring for VQA): the extractor, zero-shot, search and
VQA ask for a capability, never for a family's name.
"""
