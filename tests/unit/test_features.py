import pytest

from dmabuf_top import features
from dmabuf_top.commands.doctor import render_table
from dmabuf_top.errors import NeedsPrivilege
from dmabuf_top.probes import hooks


@pytest.mark.parametrize(
    "caps, allowed",
    [
        (0, False),
        (1 << features.CAP_SYS_ADMIN, True),
        ((1 << features.CAP_BPF) | (1 << features.CAP_PERFMON), True),
        (1 << features.CAP_BPF, False),
    ],
)
def test_privilege_rule(caps, allowed):
    assert features.has_bpf_privileges(caps) is allowed


def test_capabilities_read_from_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert features.effective_capabilities(status) == 0x1FFFFFFFFFF


def test_unprivileged_detection_is_one_clear_sentence(monkeypatch):
    monkeypatch.setattr(features, "effective_capabilities", lambda: 0)
    with pytest.raises(NeedsPrivilege, match="sudo") as raised:
        features.detect()
    assert raised.value.exit_code == 2
    assert "\n" not in str(raised.value)


def test_every_hook_has_somewhere_to_attach():
    for hook in hooks.HOOK_POINTS:
        assert hook.functions or hook.tracepoints, hook.name


def test_doctor_trials_every_place_the_tracer_attaches():
    """One list: every program the Tracer may load attaches to a function or tracepoint of its own hook point,
    which is what doctor trials, with an attach kind the point lists."""
    for point, program in hooks.programs():
        assert program.attach in point.attach, program.name
        if program.attach == hooks.FENTRY:
            assert program.target in point.functions, program.name
        elif program.attach == hooks.TRACEPOINT:
            assert program.target in point.tracepoints, program.name
    names = [program.name for _, program in hooks.programs()]
    assert len(names) == len(set(names))
    fallbacks = {program.fallback_for for _, program in hooks.programs()} - {""}
    assert fallbacks <= set(names)


def test_table_groups_and_says_why():
    report = features.FeatureReport(kernel={"release": "7.2.0", "machine": "x86_64", "btf": True})
    report.features["fentry"] = features.Feature(False, None, "EPERM")
    report.features["iter/dmabuf"] = features.Feature(True, "iter/dmabuf", "ok")
    text = render_table(report)
    assert "kernel 7.2.0" in text
    assert "fentry" in text and "EPERM" in text
    assert text.index("Attach types") < text.index("Iterators")


def test_withheld_attach_kinds_are_reported_refused_so_that_the_lab_can_stand_in_for_the_ci_host():
    found = {name: features.Feature(True, name, "ok") for name in ("fentry", "fexit", "kprobe", "kretprobe", "tp_btf")}
    features.withhold(found, "fentry, kprobe")
    assert not any(found[name].available for name in ("fentry", "fexit", "kprobe", "kretprobe"))
    assert found["tp_btf"].available and "withheld (DMABUF_TOP_WITHHOLD=" in found["fentry"].detail
    features.withhold(found, "tp_btf")
    assert not found["tp_btf"].available and found["tp_btf"].detail == "withheld (DMABUF_TOP_WITHHOLD=tp_btf)"
    features.withhold(found, "")  # unset: nothing withheld
    with pytest.raises(ValueError, match="unknown attach kind 'uprobe'"):
        features.withhold(found, "uprobe")
