"""Landmark schemes: flip tables (validity, geometry, pixel convention), derived flips
for contest971, and custom scheme files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facepoints.schemes import (
    BUILTIN,
    LandmarkScheme,
    SchemeError,
    get_scheme,
    load_scheme_file,
    scheme_for_points,
)

FLIPPABLE = [name for name, s in BUILTIN.items() if s.has_flip]


def test_builtins_present():
    assert set(BUILTIN) == {"ibug68", "wflw98", "cofw29", "five", "contest971"}
    assert set(FLIPPABLE) == {"ibug68", "wflw98", "cofw29", "five"}
    for name, s in BUILTIN.items():
        assert get_scheme(name) is s
        assert s.name == name
        assert get_scheme(s) is s


# ------------------------------------------------------------ flip tables


@pytest.mark.parametrize("name", FLIPPABLE)
def test_flip_permutation_is_a_valid_involution(name):
    s = get_scheme(name)
    perm = s.flip_permutation
    assert perm.shape == (s.num_points,)
    assert np.issubdtype(perm.dtype, np.integer)
    assert sorted(perm.tolist()) == list(range(s.num_points))  # a permutation
    np.testing.assert_array_equal(perm[perm], np.arange(s.num_points))  # an involution
    assert len(s.flip_pairs) > 0


@pytest.mark.parametrize("name", FLIPPABLE)
@pytest.mark.parametrize("width", [64, 101])
def test_flipping_twice_is_identity(name, width):
    s = get_scheme(name)
    pts = np.random.default_rng(0).uniform(0, width - 1, size=(s.num_points, 2))
    once = s.flip_landmarks(pts, width)
    assert not np.allclose(once, pts)
    np.testing.assert_allclose(s.flip_landmarks(once, width), pts, atol=1e-12)
    # the input is not modified
    np.testing.assert_array_equal(pts, np.random.default_rng(0).uniform(0, width - 1, size=pts.shape))


@pytest.mark.parametrize("name", ["ibug68", "wflw98"])
def test_flip_pairs_respect_left_right_groups(name):
    """A flip maps right_X onto left_X and keeps every central group onto itself."""
    s = get_scheme(name)
    group_of = {i: g for g, members in s.groups.items() for i in members}
    assert sorted(group_of) == list(range(s.num_points))
    perm = s.flip_permutation
    for i in range(s.num_points):
        g, h = group_of[i], group_of[int(perm[i])]
        if g.startswith("right_"):
            assert h == "left_" + g[len("right_"):], (i, int(perm[i]))
        elif g.startswith("left_"):
            assert h == "right_" + g[len("left_"):], (i, int(perm[i]))
        else:
            assert h == g, (i, int(perm[i]))


def _ellipse(centre, radii, degrees):
    a = np.deg2rad(np.asarray(degrees, float))
    # y grows downwards in images, so "up" (positive angle) is -y
    return np.stack([centre[0] + radii[0] * np.cos(a), centre[1] - radii[1] * np.sin(a)], axis=1)


def symmetric_ibug68(width: int = 200) -> np.ndarray:
    """A mirror-symmetric face built from the iBUG 68 numbering convention alone (not
    from the flip table): contours numbered from the image's left to its right,
    eyes clockwise from the outer/inner corner on the image's left, mouth clockwise
    from the left corner. Symmetric about the pixel-centre axis x = (width-1)/2."""
    c = (width - 1) / 2
    u = np.zeros((68, 2))  # face coordinates: axis at u = 0, x = c + 80 u
    theta = np.pi * np.arange(17) / 16
    u[0:17] = np.stack([-np.cos(theta), -0.2 + 0.9 * np.sin(theta)], 1)  # jaw
    k = np.arange(5)
    arch = -0.5 - 0.1 * np.sin(np.pi * k / 4)
    u[17:22] = np.stack([-0.8 + 0.15 * k, arch], 1)  # brow on the image's left
    u[22:27] = np.stack([0.2 + 0.15 * k, arch], 1)  # brow on the image's right
    u[27:31] = np.stack([np.zeros(4), -0.3 + 0.1 * np.arange(4)], 1)  # bridge
    k = np.arange(5) - 2
    u[31:36] = np.stack([0.1 * k, 0.1 - 0.02 * np.abs(k)], 1)  # nostrils
    eye_angles = [180, 120, 60, 0, -60, -120]
    u[36:42] = _ellipse((-0.45, -0.3), (0.15, 0.07), eye_angles)
    u[42:48] = _ellipse((0.45, -0.3), (0.15, 0.07), eye_angles)
    u[48:60] = _ellipse((0.0, 0.4), (0.35, 0.15), 180 - 30 * np.arange(12))
    u[60:68] = _ellipse((0.0, 0.4), (0.2, 0.06), 180 - 45 * np.arange(8))
    pts = np.empty_like(u)
    pts[:, 0] = c + 80 * u[:, 0]
    pts[:, 1] = 100 + 80 * u[:, 1]
    return pts


def symmetric_five(width: int = 200) -> np.ndarray:
    c = (width - 1) / 2
    u = np.array([[-0.4, -0.2], [0.4, -0.2], [0.0, 0.1], [-0.3, 0.4], [0.3, 0.4]])
    return np.stack([c + 80 * u[:, 0], 100 + 80 * u[:, 1]], 1)


@pytest.mark.parametrize("width", [200, 201])
@pytest.mark.parametrize("name,face", [("ibug68", symmetric_ibug68), ("five", symmetric_five)])
def test_symmetric_face_flips_onto_itself(name, face, width):
    s = get_scheme(name)
    pts = face(width)
    assert len(np.unique(np.round(pts, 6), axis=0)) == s.num_points  # all distinct
    np.testing.assert_allclose(s.flip_landmarks(pts, width), pts, atol=1e-9)
    # mirroring without re-indexing does not give the face back: the table matters
    mirrored = pts.copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    assert not np.allclose(mirrored, pts)
    # and the wrong axis convention (x -> width - x) is off by one pixel everywhere
    np.testing.assert_allclose(s.flip_landmarks(pts, width + 1) - pts, [[1, 0]] * s.num_points, atol=1e-9)


@pytest.mark.parametrize("name", FLIPPABLE)
@pytest.mark.parametrize("width", [61, 64])
def test_flipped_landmarks_land_on_cv2_flipped_dots(name, width):
    """Draw each landmark as a one-pixel dot whose value is its index + 1, flip the
    image with cv2.flip: flipped landmark i must sit on the dot of point perm[i]."""
    s = get_scheme(name)
    height = 48
    rng = np.random.default_rng(width)
    cells = rng.choice(width * height, size=s.num_points, replace=False)
    pts = np.stack([cells % width, cells // width], axis=1).astype(np.float64)
    img = np.zeros((height, width, 3), np.uint16)
    for i, (x, y) in enumerate(pts.astype(int)):
        img[y, x] = (i + 1, 1000 + i, 7)  # a "colour" unique to the point
    flipped_img = cv2.flip(img, 1)
    flipped = s.flip_landmarks(pts, width)
    assert np.all(flipped == np.round(flipped))  # integer pixels stay integer
    xs, ys = flipped[:, 0].astype(int), flipped[:, 1].astype(int)
    assert xs.min() >= 0 and xs.max() < width
    perm = s.flip_permutation
    np.testing.assert_array_equal(flipped_img[ys, xs, 0], perm + 1)
    np.testing.assert_array_equal(flipped_img[ys, xs, 1], 1000 + perm)
    # every dot of the flipped image is covered by a flipped landmark
    assert np.count_nonzero(flipped_img[..., 2]) == s.num_points


def test_flip_landmarks_works_with_integer_arrays():
    s = get_scheme("five")
    pts = np.array([[10, 5], [30, 5], [20, 15], [12, 25], [28, 25]])
    out = s.flip_landmarks(pts, 41)
    np.testing.assert_array_equal(out, [[10, 5], [30, 5], [20, 15], [12, 25], [28, 25]])


# ------------------------------------------------------- contest971 (derived)


def test_contest971_has_no_flip_table():
    s = get_scheme("contest971")
    assert s.num_points == 971 and not s.has_flip
    with pytest.raises(SchemeError, match="with_flip_from_mean_shape"):
        _ = s.flip_permutation
    with pytest.raises(SchemeError):
        s.flip_landmarks(np.zeros((971, 2)), 100)
    covered = sorted(i for members in s.groups.values() for i in members)
    assert covered == list(range(971))


AXIS_POINTS = {"lower_oval": 2, "upper_oval": 3, "brows": 0, "nose": 6, "eyes": 0, "lips": 2}


def symmetric_contest971(width: float = 300.0, seed: int = 0):
    """A mean shape symmetric about x = width/2 that honours the contest971 groups.

    In each group (indices g, in order) points g[k] and g[-1-k] are mirror images,
    the first on the image's left, as a contour numbered across the face would be;
    the few points in the middle of the group lie on the axis. Pupils 969 / 970 are
    mirrored. Returns (points, expected permutation)."""
    s = get_scheme("contest971")
    rng = np.random.default_rng(seed)
    pts = np.full((971, 2), np.nan)
    perm = np.arange(971)
    # right-half grid, face coordinates: x in [0.05, 0.455] from the axis, y in [0, 1.125]
    grid = np.array([(0.05 + 0.045 * i, 0.045 * j) for i in range(10) for j in range(26)])
    for gname, members in s.groups.items():
        if gname == "pupils":
            continue
        g = list(members)
        n_axis = AXIS_POINTS[gname]
        n_pairs = (len(g) - n_axis) // 2
        assert 2 * n_pairs + n_axis == len(g)
        cells = grid[rng.choice(len(grid), size=n_pairs, replace=False)]
        cells = cells + rng.uniform(-0.004, 0.004, size=cells.shape)
        for k in range(n_pairs):
            a, b = g[k], g[-1 - k]
            pts[a] = (-cells[k, 0], cells[k, 1])
            pts[b] = (cells[k, 0], cells[k, 1])
            perm[a], perm[b] = b, a
        for j, i in enumerate(g[n_pairs:len(g) - n_pairs]):
            pts[i] = (0.0, 0.1 + 0.15 * j)
    pts[969] = (-0.2, 0.45)
    pts[970] = (0.2, 0.45)
    perm[969], perm[970] = 970, 969
    assert not np.isnan(pts).any()
    return pts * width + [width / 2, 0.1 * width], perm


def test_contest971_flip_derived_from_symmetric_mean_shape():
    width = 300.0
    mean, expected = symmetric_contest971(width)
    np.testing.assert_array_equal(expected[expected], np.arange(971))
    base = get_scheme("contest971")
    derived = base.with_flip_from_mean_shape(mean)
    assert derived.has_flip and derived.num_points == 971
    assert derived.groups == base.groups and derived.pupils == base.pupils
    assert base.has_flip is False  # the built-in is unchanged
    perm = derived.flip_permutation
    np.testing.assert_array_equal(perm, expected)
    np.testing.assert_array_equal(perm[perm], np.arange(971))
    assert int((perm == np.arange(971)).sum()) == sum(AXIS_POINTS.values())
    # the mean shape is symmetric about x = width / 2, i.e. flips onto itself in an
    # image width + 1 pixels wide under the pixel-centre convention
    np.testing.assert_allclose(derived.flip_landmarks(mean, width + 1), mean, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_contest971_derived_flip_survives_small_noise(seed):
    width = 300.0
    mean, expected = symmetric_contest971(width, seed=seed)
    rng = np.random.default_rng(100 + seed)
    noisy = mean + rng.normal(0, 0.005 * width, size=mean.shape)  # 0.5 % of face width
    derived = get_scheme("contest971").with_flip_from_mean_shape(noisy)
    np.testing.assert_array_equal(derived.flip_permutation, expected)
    # a shifted, scaled copy of the shape gives the same table
    moved = get_scheme("contest971").with_flip_from_mean_shape(noisy * 1.7 + [40, -12])
    np.testing.assert_array_equal(moved.flip_permutation, expected)


def test_with_flip_from_mean_shape_checks_shape():
    with pytest.raises(SchemeError, match="971"):
        get_scheme("contest971").with_flip_from_mean_shape(np.zeros((68, 2)))


def test_derived_flip_for_ibug68_recovers_the_table():
    """Deriving a flip for ibug68 from a symmetric face reproduces its own table."""
    s = get_scheme("ibug68")
    derived = s.with_flip_from_mean_shape(symmetric_ibug68())
    np.testing.assert_array_equal(derived.flip_permutation, s.flip_permutation)


# ------------------------------------------------------------ custom files

MY7 = """\
name: my7
num_points: 7
flip_pairs: [[0, 1], [3, 4]]      # everything not named maps to itself
outer_eye_corners: [0, 1]
pupils: [[0], [1]]
groups: {eyes: [0, 1], nose: [2], mouth: [3, 4, 5], chin: [6]}
"""


def test_custom_yaml_scheme(tmp_path):
    path = tmp_path / "my7.yaml"
    path.write_text(MY7)
    for arg in (str(path), path):
        s = get_scheme(arg)
        assert isinstance(s, LandmarkScheme)
        assert s.name == "my7"
        assert s.num_points == 7
        assert s.flip_pairs == ((0, 1), (3, 4))
        assert s.outer_eye_corners == (0, 1)
        assert s.pupils == ((0,), (1,))
        assert s.groups == {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4, 5), "chin": (6,)}
        assert s.has_flip
        np.testing.assert_array_equal(s.flip_permutation, [1, 0, 2, 4, 3, 5, 6])
    # round trip through a dict and JSON
    s = load_scheme_file(path)
    jpath = tmp_path / "copy.json"
    jpath.write_text(json.dumps(s.to_dict()))
    assert get_scheme(str(jpath)) == s
    assert LandmarkScheme.from_dict(s.to_dict()) == s


def test_custom_scheme_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "tiny3.yml"
    path.write_text("num_points: 3\nflip_pairs: [[0, 2]]\n")
    s = get_scheme(str(path))
    assert s.name == "tiny3"
    assert s.outer_eye_corners is None and s.pupils is None and s.groups == {}
    np.testing.assert_array_equal(s.flip_permutation, [2, 1, 0])


@pytest.mark.parametrize(
    "body,message",
    [
        (MY7.replace("[3, 4]]", "[3, 7]]"), "7"),  # flip index out of range
        (MY7.replace("[[0, 1], [3, 4]]", "[[0, 1], [1, 4]]"), "two flip pairs"),
        (MY7.replace("chin: [6]", "chin: [9]"), "9"),  # group index out of range
        (MY7.replace("outer_eye_corners: [0, 1]", "outer_eye_corners: [0, -1]"), "-1"),
        (MY7.replace("pupils: [[0], [1]]", "pupils: [[0], [12]]"), "12"),
        (MY7.replace("num_points: 7", "num_points: 0"), "num_points"),
        (MY7.replace("num_points: 7\n", ""), "num_points"),  # missing
        (MY7.replace("[[0, 1], [3, 4]]", "[[0, 1, 2]]"), "invalid"),  # not a pair
        ("- 1\n- 2\n", "mapping"),
        ("name: [unclosed\n", "parse"),  # not YAML at all
    ],
)
def test_invalid_scheme_files_raise_scheme_error_naming_the_file(tmp_path, body, message):
    path = tmp_path / "broken_scheme.yaml"
    path.write_text(body)
    with pytest.raises(SchemeError, match=message) as info:
        get_scheme(str(path))
    assert "broken_scheme.yaml" in str(info.value)


def test_invalid_json_scheme_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(SchemeError, match="bad.json"):
        load_scheme_file(path)


def test_missing_scheme_file_and_unknown_names(tmp_path):
    with pytest.raises(SchemeError, match="nope.yaml"):
        get_scheme(str(tmp_path / "nope.yaml"))
    with pytest.raises(SchemeError, match="ibug68"):  # the message lists the built-ins
        get_scheme("ibug69")


def test_scheme_for_points():
    assert scheme_for_points(68) is get_scheme("ibug68")
    assert scheme_for_points(971) is get_scheme("contest971")
    anon = scheme_for_points(7)
    assert anon.num_points == 7 and not anon.has_flip
    with pytest.raises(SchemeError):
        _ = anon.flip_permutation
