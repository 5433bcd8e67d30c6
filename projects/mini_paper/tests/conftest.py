"""Set-up shared by the mini-paper tests, as for the library's tests."""
import warnings

# mmcv (installed without its compiled ops) warns on import; silence it
# before anything below imports mmseg.
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the models are tiny, and a second OpenMP thread on a
# busy core makes every op wait.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
