import pytest

from hvd_helpers import BACKENDS, require_backend


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn; the Horovod one skips (outside CI) when Horovod is missing."""
    require_backend(request.param)
    return request.param
