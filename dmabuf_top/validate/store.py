"""A validate run into a session file, so `dmabuf-top report` can compare the methods.

The run's rows go into metadata key `validate` (JSON: what ValidateRun.to_dict() gives);
each method's per-path counters become path_samples (inode = the method's buffer), its
evidence stacks go into stacks/stack_counts (so the flame graph shows them), and the
tracer's hooks into hooks. No schema change: a reader without validate support ignores
the key.
"""
import os
import sys

from .. import session as records


def record_run(run, path, report=None, overwrite=False):
    with records.SessionWriter(path, overwrite=overwrite) as writer:
        writer.set_metadata(argv=list(sys.argv), command=run.command, validate=run.to_dict())
        if report is not None:
            writer.set_features(report)
        for hook in run.hooks:
            writer.add(records.Hook(hook.program, hook.live, hook.via or "", "" if hook.live else hook.reason))
        for stack_id, frames in run.stacks.items():
            writer.add(records.Stack(stack_id, "\n".join(frames)))
        for result in run.results:
            for stack in result.evidence:
                writer.add(records.StackCount(stack["stack_id"], stack["point"], stack["path"], stack["hits"],
                                              stack["amount"]))
            for path, counters in result.paths.items():
                writer.add(records.PathSample(
                    result.ended_ns, result.buffer_inode, os.getpid() if run.command is None else 0, path,
                    counters["bytes"], counters["cpu_copied"] or 0, counters["pinned_pages"] or 0,
                    counters["pc_added"] or 0, counters["calls"], counters["errors"]))
    return path
