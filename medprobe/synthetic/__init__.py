"""Generated inputs, never real data: random-weight models (``models``) and the demo's synthetic tissue tiles
(``tissue``). Only the CLI's demo imports it (the tissue tiles); the random models reach
``load_adapter`` through the ``medprobe.model_families`` entry-point group."""
