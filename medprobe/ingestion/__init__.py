"""Ingest: a collection on disk -> the store's ``images``, ``dataset_images``, ``tasks``, ``datasets`` and
``failures`` rows.

``formats/`` parses the 13 published layouts into records; ``hashing`` hashes and checks the files (with
``medprobe.imaging``); ``splits`` keeps shipped splits or generates grouped, stratified ones; ``pipeline``
(``ingest``) writes the rows; ``overview`` summarises datasets. Uses only the store's public API.
"""
