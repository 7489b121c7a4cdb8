"""IDX reading and writing: round trips, gzip detection, and errors that name the file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bioprop.data.idx import IDXError, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_keeps_values_shape_and_dtype(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((5, 3, 4)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_one_dimensional_labels_round_trip(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l-idx1.gz", labels)), labels)


def test_gz_suffix_writes_gzip_and_raw_otherwise(tmp_path):
    arr = np.zeros((2, 2), np.uint8)
    assert write_idx(tmp_path / "a.gz", arr).read_bytes()[:2] == b"\x1f\x8b"
    assert write_idx(tmp_path / "a", arr).read_bytes()[:4] == bytes([0, 0, 0x08, 2])


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz = write_idx(tmp_path / "x.gz", arr)
    renamed = gz.rename(tmp_path / "x-no-extension")
    np.testing.assert_array_equal(read_idx(renamed), arr)
    raw = write_idx(tmp_path / "y", arr).rename(tmp_path / "y-misnamed.gz")
    np.testing.assert_array_equal(read_idx(raw), arr)


def test_multi_member_gzip_is_read_whole(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 12)
    payload = write_idx(tmp_path / "raw", arr).read_bytes()
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(payload[:10]) + gzip.compress(payload[10:]))
    np.testing.assert_array_equal(read_idx(path), arr)


def test_result_is_writable_and_native_byte_order(tmp_path):
    out = read_idx(write_idx(tmp_path / "f", np.ones((2, 3), np.float32)))
    assert out.flags.writeable
    assert out.dtype.isnative
    out[0, 0] = 5.0  # does not raise


@pytest.mark.parametrize(
    "magic", [b"\x01\x00\x08\x01", b"\x00\x01\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00"]
)
def test_wrong_magic_number_is_an_error_naming_the_file(tmp_path, magic):
    path = tmp_path / "bad-magic-idx1-ubyte"
    path.write_bytes(magic + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(IDXError, match="not an IDX file: magic number") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_text_file_with_wrong_magic_is_rejected_even_when_gzipped(tmp_path):
    path = tmp_path / "notes.gz"
    path.write_bytes(gzip.compress(b"hello, this is not IDX"))
    with pytest.raises(IDXError, match=r"notes\.gz: not an IDX file"):
        read_idx(path)


def test_idx_error_is_a_value_error():
    assert issubclass(IDXError, ValueError)


def test_truncated_payload_is_an_error_naming_the_file(tmp_path):
    path = write_idx(tmp_path / "images-idx3-ubyte", np.zeros((4, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(IDXError, match=r"truncated: header announces shape \(4, 3, 3\)") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_truncated_payload_inside_gzip_is_an_error_naming_the_file(tmp_path):
    raw = write_idx(tmp_path / "raw", np.zeros((4, 3, 3), np.uint8)).read_bytes()
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-1]))
    with pytest.raises(IDXError, match="truncated") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_truncated_header_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (4).to_bytes(4, "big"))  # 1 of 3 sizes
    with pytest.raises(IDXError, match=r"short: truncated: header announces 3 dimensions"):
        read_idx(path)


def test_file_shorter_than_a_magic_number_is_an_error(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match=r"tiny: only 2 bytes"):
        read_idx(path)


def test_truncated_gzip_stream_is_an_error_naming_the_file(tmp_path):
    gz = write_idx(tmp_path / "a.gz", np.arange(1000, dtype=np.int32)).read_bytes()
    path = tmp_path / "cut.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(IDXError, match=r"cut\.gz: gzip data is truncated"):
        read_idx(path)


def test_corrupt_gzip_stream_is_an_error_naming_the_file(tmp_path):
    gz = bytearray(write_idx(tmp_path / "a.gz", np.arange(1000, dtype=np.int32)).read_bytes())
    gz[20:40] = bytes(range(20))
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(gz))
    with pytest.raises(IDXError, match=r"corrupt\.gz: gzip data is (corrupt|truncated)"):
        read_idx(path)


def test_trailing_bytes_are_an_error(tmp_path):
    path = write_idx(tmp_path / "long", np.zeros(3, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IDXError, match="long: has trailing bytes"):
        read_idx(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_rejects_dtypes_idx_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="dtype float16 has no IDX code; use one of uint8"):
        write_idx(tmp_path / "h", np.zeros(2, np.float16))


def test_write_rejects_scalars(tmp_path):
    with pytest.raises(ValueError, match="1 to 255 dimensions, got 0"):
        write_idx(tmp_path / "s", np.uint8(3))
