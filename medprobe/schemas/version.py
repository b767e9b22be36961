"""The store's on-disk format version.

Bump ``FORMAT_VERSION`` whenever a table schema, the segment layout or the store
layout changes in a way an older reader would misread. A reader refuses a store
whose version is newer than its own.
"""

FORMAT_VERSION = 1
