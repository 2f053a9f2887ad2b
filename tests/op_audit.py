"""The op audit lives in :mod:`bench.op_audit` (the GPU suite runs it too); the tests import
it from here."""
from bench.op_audit import (  # noqa: F401
    FORBIDDEN,
    ForbiddenOpError,
    HostSyncError,
    OpRecorder,
    audited,
    no_host_sync,
)
