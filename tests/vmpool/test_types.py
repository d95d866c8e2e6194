from __future__ import annotations

import pytest

import vmpool
from vmpool import ExecRequest, Limits, PoolConfig, Status


def test_exception_tree():
    assert issubclass(vmpool.SandboxStartError, vmpool.SandboxError)
    assert issubclass(vmpool.SandboxSetupError, vmpool.SandboxError)
    for exc in (vmpool.SandboxError, vmpool.PoolClosedError, vmpool.BackendUnavailableError):
        assert issubclass(exc, vmpool.VmpoolError)


@pytest.mark.parametrize("kwargs, needle", [
    ({"wall_s": 0}, "wall_s"),
    ({"memory_mb": 8}, "memory_mb"),
    ({"max_processes": 0}, "max_processes"),
    ({"cpu_s": -1}, "cpu_s"),
    ({"output_bytes": 1.5}, "output_bytes"),
])
def test_limits_validation_names_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Limits(**kwargs)


def test_cpu_limit_defaults_from_wall():
    assert Limits(wall_s=2.5).effective_cpu_s == 4
    assert Limits(wall_s=2, cpu_s=0.5).effective_cpu_s == 0.5  # fractional: the agent polls it


def test_request_rejects_paths_outside_workdir():
    with pytest.raises(ValueError, match="relative path"):
        ExecRequest(code="", files={"../x": "y"})
    with pytest.raises(ValueError, match="relative path"):
        ExecRequest(code="", files={"/etc/x": "y"})
    with pytest.raises(TypeError):
        ExecRequest(code=b"print(1)")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, needle", [
    ({"backend": "docker"}, "backend"),
    ({"size": 0}, "size"),
    ({"max_programs_per_sandbox": 0}, "max_programs_per_sandbox"),
    ({"accel": "hvf"}, "accel"),
])
def test_pool_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PoolConfig(**kwargs)


def test_only_sandbox_error_is_infrastructure():
    assert [s for s in Status if s.is_infrastructure] == [Status.SANDBOX_ERROR]


@pytest.mark.microvm
def test_auto_backend_decides_by_booting_and_says_why(caplog):
    import logging
    import os
    with caplog.at_level(logging.INFO, logger="vmpool"):
        backend = vmpool.resolve_backend("auto")
    assert "backend auto:" in caplog.text
    if backend == "microvm":
        assert "KVM works" in caplog.text
    else:
        assert backend == "namespace"
        # /dev/kvm existing is not enough: here (PVM-backed KVM) the probe boot must fail and say so.
        assert "no /dev/kvm" in caplog.text or ("KVM" in caplog.text and os.path.exists("/dev/kvm"))
