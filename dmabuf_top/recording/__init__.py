"""The recording room: `dmabuf-top record` and the session file it writes.

recorder.py         the Source seam and the polling loop
command.py          the traced command, forked and held until the sources are attached
sources.py          the sources `record` runs: buffer snapshots and I/O paths (one iter/dmabuf read per tick)
rows.py             pure functions turning tracer reads into session rows
taskstats_source.py delay accounting of the traced command and its descendants
session.py          the session store (SQLite), read by `report`, `flame`, exports and analysis/

recorder.py and the sources do not import each other: `record` (commands/record.py) puts them together.
"""
