"""Face-set files: round trip, and a clear error for every kind of wrong file."""
import numpy as np
import pytest

from swapstream.faces.align import AlignTemplate
from swapstream.faces.errors import FaceSetError
from swapstream.faces.faceset import FORMAT_VERSION, FaceSet, load_faceset, save_faceset


def _set(n=5, size=16):
    rng = np.random.default_rng(0)
    return FaceSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                   np.array(["v.mp4"] * n), np.arange(n), np.tile([1, 2, 30, 30], (n, 1)), 0.2)


def test_round_trip(tmp_path):
    path = str(tmp_path / "set.npz")
    save_faceset(path, _set())
    fs = load_faceset(path)
    assert len(fs) == 5 and fs.size == 16 and fs.margin == pytest.approx(0.2)
    np.testing.assert_array_equal(fs.faces, _set().faces)
    assert fs.subset(np.array([1, 3])).frame_index.tolist() == [1, 3]


def _aligned(n=5, size=16):
    fs = _set(n, size)
    rng = np.random.default_rng(1)
    fs.template = AlignTemplate(size=size, eye_distance=0.3, eye_line=0.4)
    fs.matrix = rng.normal(size=(n, 2, 3))
    fs.landmarks = rng.uniform(0, 100, (n, 5, 2)).astype(np.float32)
    return fs


def test_aligned_round_trip_keeps_template_matrices_and_landmarks(tmp_path):
    path = str(tmp_path / "set.npz")
    save_faceset(path, _aligned())
    fs = load_faceset(path)
    assert fs.aligned and fs.template == AlignTemplate(size=16, eye_distance=0.3, eye_line=0.4)
    np.testing.assert_array_equal(fs.matrix, _aligned().matrix)
    np.testing.assert_array_equal(fs.landmarks, _aligned().landmarks)
    assert set(fs.extra) == set()  # the alignment arrays are not left in `extra`
    sub = fs.subset(np.array([4, 0]))
    np.testing.assert_array_equal(sub.matrix, fs.matrix[[4, 0]])
    np.testing.assert_array_equal(sub.landmarks, fs.landmarks[[4, 0]])
    assert sub.template == fs.template
    assert not load_faceset(_saved(tmp_path, _set())).aligned


def _saved(tmp_path, fs, name="other.npz"):
    path = str(tmp_path / name)
    save_faceset(path, fs)
    return path


def test_inconsistent_alignment_is_refused(tmp_path):
    fs = _aligned()
    fs.landmarks = None
    with pytest.raises(FaceSetError, match="all or none"):
        save_faceset(str(tmp_path / "a.npz"), fs)
    fs = _aligned()
    fs.matrix = fs.matrix[:3]
    with pytest.raises(FaceSetError, match="matrix"):
        save_faceset(str(tmp_path / "a.npz"), fs)
    fs = _aligned()
    fs.template = AlignTemplate(size=32)
    with pytest.raises(FaceSetError, match="template is 32 px"):
        save_faceset(str(tmp_path / "a.npz"), fs)
    # a file with only some of the alignment arrays
    path = _saved(tmp_path, _aligned())
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "landmarks"}
    np.savez(path, **arrays)
    with pytest.raises(FaceSetError, match="lacks landmarks"):
        load_faceset(path)
    arrays["landmarks"], arrays["template"] = _aligned().landmarks, np.array([16, 5.0, 0.4])
    np.savez(path, **arrays)
    with pytest.raises(FaceSetError, match="bad template"):
        load_faceset(path)


def test_old_format_asks_for_re_extraction(tmp_path):
    """A format-1 file (no format_version: unaligned Haar squares) gets a one-line message."""
    path = _saved(tmp_path, _set())
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "format_version"}
    np.savez(path, **arrays)
    with pytest.raises(FaceSetError, match="format 1.*re-extract") as err:
        load_faceset(path)
    assert "\n" not in str(err.value)
    arrays["format_version"] = np.int64(FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    with pytest.raises(FaceSetError, match=f"format_version {FORMAT_VERSION + 1}"):
        load_faceset(path)


def test_missing_file(tmp_path):
    with pytest.raises(FaceSetError, match="does not exist"):
        load_faceset(str(tmp_path / "nope.npz"))


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.npz"
    save_faceset(str(path), _set())
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(FaceSetError, match="not a valid .npz"):
        load_faceset(str(path))


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'"])
def test_a_file_that_is_no_npz_is_named_as_such(tmp_path, content):
    """A text file, an empty file or a single .npy array: "not an .npz face set", not a word of pickles."""
    path = tmp_path / "set.npz"
    path.write_bytes(content)
    with pytest.raises(FaceSetError, match=r"is not an \.npz face set") as err:
        load_faceset(str(path))
    assert "pickle" not in str(err.value)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, faces=np.array([{"a": 1}], dtype=object), source=np.array(["x"]),
             frame_index=np.array([0]), box=np.zeros((1, 4)), format_version=np.int64(FORMAT_VERSION))
    with pytest.raises(FaceSetError, match="pickled"):
        load_faceset(str(path))


def test_wrong_dtype_shape_and_missing_arrays(tmp_path):
    path = str(tmp_path / "f.npz")
    np.savez(path, faces=np.zeros((2, 8, 8, 3), np.float32), source=np.array(["a", "b"]),
             frame_index=np.arange(2), box=np.zeros((2, 4)), format_version=np.int64(FORMAT_VERSION))
    with pytest.raises(FaceSetError, match="uint8"):
        load_faceset(path)
    np.savez(path, faces=np.zeros((2, 8, 9, 3), np.uint8), source=np.array(["a", "b"]),
             frame_index=np.arange(2), box=np.zeros((2, 4)), format_version=np.int64(FORMAT_VERSION))
    with pytest.raises(FaceSetError, match="N x S x S x 3"):
        load_faceset(path)
    np.savez(path, faces=np.zeros((2, 8, 8, 3), np.uint8), format_version=np.int64(FORMAT_VERSION))
    with pytest.raises(FaceSetError, match="lacks"):
        load_faceset(path)


def test_empty_set_is_refused(tmp_path):
    path = str(tmp_path / "empty.npz")
    np.savez(path, faces=np.zeros((0, 8, 8, 3), np.uint8), source=np.array([], str),
             frame_index=np.zeros(0, np.int64), box=np.zeros((0, 4), np.int64),
             format_version=np.int64(FORMAT_VERSION))
    with pytest.raises(FaceSetError, match="0 faces"):
        load_faceset(path)
