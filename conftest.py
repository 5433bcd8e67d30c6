"""Set-up every test in the repository shares (tests/ and projects/)."""
import warnings

# mmcv (installed without its compiled ops) warns on import; silence it
# before anything below imports mmseg.
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the test models are tiny, and on a shared 2-core
# machine a second OpenMP thread makes every op wait for a busy core (100x
# slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
