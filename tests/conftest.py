import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# ONNX exports of .safetensors models (deploy.runtime.cached_onnx) go to a fresh folder,
# not the user's ~/.cache
os.environ["FACEPOINTS_CACHE"] = tempfile.mkdtemp(prefix="facepoints-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "300w").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
