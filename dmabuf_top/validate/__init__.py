"""`dmabuf-top validate`: what each way of loading a file into a dma-buf really costs, from kernel events.

    methods.METHODS        the matrix (data: one Method per way, each a small load function)
    runner.run_matrix()    prepare a file, drop the page cache, run and trace each method -> ValidateRun
    runner.trace_command() the same table for a user's own command
    verdict.verdict()      the pure verdict: zero-copy, N copies, failed (errno), wrong data, unmeasured
    render.render_table()  the text table; store.record_run() writes a session `report` can draw
"""
