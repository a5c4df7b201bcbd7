"""A method whose block-layer evidence the kernel cut (skipped probe runs) is loaded again, and says so."""
from dmabuf_top.validate import runner
from dmabuf_top.validate.verdict import absent


def result_with(skips):
    result = runner.MethodResult("m", "a method", "udmabuf", False, 1, absent("?"))
    result.evidence_skips = skips
    return result


def measured(skips_per_load):
    loads = iter(skips_per_load)
    calls = []

    class Loads(runner.Runner):
        def __init__(self):  # no tracer, no file: only the attempt rule is under test
            pass

        def run_one(self, method):
            calls.append(method)
            return result_with(next(loads))

    return Loads().run_measured("m"), len(calls)


def test_a_whole_window_is_kept_at_once():
    result, loads = measured([0])
    assert (loads, result.notes) == (1, [])


def test_a_cut_window_is_loaded_again_and_the_result_says_how_many_loads_it_took():
    result, loads = measured([3, 0])
    assert loads == 2 and result.evidence_skips == 0
    assert result.notes == ["loaded 2 times: the kernel skipped runs of the block-layer probe in the earlier loads "
                            "(nested completions), so their DMA evidence was not whole"]


def test_evidence_still_cut_after_every_attempt_is_kept_with_its_loss():
    result, loads = measured([1, 2, 4, 0])
    assert loads == runner.EVIDENCE_ATTEMPTS and result.evidence_skips == 4
