"""Turn MediaPipe's canonical face model (``canonical_face_model.obj``, Apache-2.0,
from the MediaPipe repository, ``mediapipe/modules/face_geometry/data/``) into the small
array file the face-profiling synthesis reads: ``src/facepoints/data/canonical_face.npz``
with ``vertices`` (468, 3; the model's own axes: x to the image's right on a frontal face,
y up, z toward the viewer, centimetre-like units) and ``triangles`` (898, 3; 0-based).

    python tools/convert_canonical_face.py canonical_face_model.obj
"""

import sys
from pathlib import Path

import numpy as np

obj = Path(sys.argv[1]).read_text().splitlines()
vertices = np.array([[float(v) for v in line.split()[1:4]] for line in obj if line.startswith("v ")], np.float32)
# faces are "f a/a b/b c/c" (vertex/texture indices, 1-based)
triangles = np.array([[int(t.split("/")[0]) - 1 for t in line.split()[1:4]] for line in obj if line.startswith("f ")],
                     np.int16)
assert vertices.shape == (468, 3) and triangles.shape[1] == 3 and triangles.max() < 468
out = Path(__file__).resolve().parents[1] / "src/facepoints/data/canonical_face.npz"
np.savez_compressed(out, vertices=vertices, triangles=triangles)
print(f"{out}: {len(vertices)} vertices, {len(triangles)} triangles")
