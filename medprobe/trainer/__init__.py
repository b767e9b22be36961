"""The trainer: stored activations -> fitted, selected and tested linear probes, written back to the store.

``data`` reads labels and features; ``solvers/`` fit batches of L2 logistic probes (torch, scikit-learn, cuML);
``protocol`` chooses C on training rows and refits; ``metrics``/``bootstrap`` score the test split with CIs;
``experiment`` runs a spec and writes ``probe_results``/``predictions``; ``compare`` and ``report`` build on runs.
Never imports the extractor; uses only the store's public API.
"""
