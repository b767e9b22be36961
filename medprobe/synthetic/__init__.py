"""Generated inputs, never real data: random-weight models (``models``) and the demo's synthetic tissue tiles
(``tissue``). Nothing in the extractor, trainer or store imports this package; the random models reach
``load_adapter`` through the ``medprobe.model_families`` entry-point group."""
