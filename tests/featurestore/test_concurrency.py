"""Two writer processes committing at once: disjoint and overlapping image sets, no loss, no duplicate rows."""

from __future__ import annotations

import numpy as np

from medprobe.featurestore.maintenance import verify_store
from tests.helpers.crash_writer import FEATURE_SET
from tests.helpers.features import activation, image_hash
from tests.helpers.writers import check_store, finish, start_writers


def test_two_writers_disjoint_and_overlapping(tmp_path):
    """Local folder only: ``memory://`` lives inside one process, so two processes cannot share it."""
    url = str(tmp_path / "store")
    # writer A: images a0..a29 (disjoint), writer B: images a15..a44: a15..a29 are written by both
    procs = start_writers(url, [("a", 6, 5, 0), ("a", 6, 5, 15), ("b", 6, 4, 0)])
    outs = [finish(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    printed = {line for out in outs for line in out.split() if line.startswith("seg-")}
    store, committed = check_store(url)
    assert printed == committed and len(committed) == 18
    assert verify_store(store).ok
    fsid = FEATURE_SET.feature_set_id
    want = sorted({image_hash(f"a{i}") for i in range(45)} | {image_hash(f"b{i}") for i in range(24)})
    for layer, hidden in enumerate(FEATURE_SET.hidden_sizes):
        visible = store.sql(
            "SELECT image_hash, count(*) AS n FROM activations WHERE layer = ? GROUP BY 1 ORDER BY 1", [layer]
        )
        assert visible.column("image_hash").to_pylist() == want  # no loss
        assert set(visible.column("n").to_pylist()) == {1}  # no duplicate
        x = store.read(fsid, layer)
        np.testing.assert_array_equal(x, np.stack([activation(h, layer, hidden) for h in want]).astype(np.float16))
    raw = store.sql("SELECT count(*) FROM raw_activations WHERE layer = 0")[0][0].as_py()
    assert raw == 30 + 30 + 24  # both copies of a15..a29 were written; readers see one
    # the overlapping images resolve to the same segment whichever reader asks, and that is the smaller id
    overlap = [image_hash(f"a{i}") for i in range(15, 30)]
    chosen = store.sql(
        "SELECT a.image_hash, a.segment_id, min(r.segment_id) AS first FROM activations a JOIN raw_activations r "
        "USING (feature_set_id, layer, image_hash) WHERE a.layer = 0 AND list_contains(?, a.image_hash) GROUP BY ALL",
        [overlap],
    )
    assert chosen.num_rows == 15 and chosen.column("segment_id").to_pylist() == chosen.column("first").to_pylist()
