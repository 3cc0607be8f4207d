"""sensor_msgs <-> numpy on real message classes: every accepted encoding gives the
same RGB pixels, every malformed message one clear ImageError."""
import array
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from seg_perception.runtime.image_conversion import (ImageError, compressed_to_array, encoded_size, fill_image,
                                                     image_to_array, to_rgb)


def raw(img, encoding, pad=0):
    h, w = img.shape[:2]
    rows = img.reshape(h, -1)
    if pad:
        rows = np.hstack([rows, np.full((h, pad), 77, np.uint8)])
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1])
    msg.data = array.array("B", rows.tobytes())
    return msg


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc,make", [
    ("rgb8", lambda x: x),
    ("bgr8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGR)),
    ("rgba8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2RGBA)),
    ("bgra8", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGRA)),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_give_the_same_rgb(rgb, enc, make, pad):
    arr, layout = image_to_array(raw(make(rgb), enc, pad))
    np.testing.assert_array_equal(to_rgb(arr, layout), rgb)


def test_rgb8_is_a_view_of_the_message_buffer(rgb):
    msg = raw(rgb, "rgb8")
    arr, _ = image_to_array(msg)
    assert not arr.flags.owndata
    assert np.shares_memory(arr, np.frombuffer(msg.data, np.uint8))


def test_mono8(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    arr, layout = image_to_array(raw(gray, "mono8", pad=3))
    assert layout == "mono"
    np.testing.assert_array_equal(arr, gray)


@pytest.mark.parametrize("enc,code", [("yuv422", cv2.COLOR_YUV2RGB_UYVY),
                                      ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2)])
def test_yuv422(enc, code):
    rng = np.random.default_rng(1)
    packed = rng.integers(16, 240, (4, 8, 2), dtype=np.uint8)
    arr, layout = image_to_array(raw(packed, enc))
    assert layout == "rgb" and arr.shape == (4, 8, 3)
    np.testing.assert_array_equal(arr, cv2.cvtColor(packed, code))
    # A flat grey in UYVY (U=V=128, Y=128) is grey in RGB.
    grey = np.full((2, 4, 2), 128, np.uint8)
    out, _ = image_to_array(raw(grey, enc))
    assert np.abs(out.astype(int) - 128).max() <= 3


def smooth_rgb(h=48, w=64):
    """A smooth colour image (a demosaic is exact only where colour changes slowly)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 140 * xx / w], -1).round().astype(np.uint8)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_mosaics_demosaic_to_the_scene_colours(pattern, bits):
    # The mosaic a sensor with this colour filter sees: each pixel keeps the one channel its
    # filter passes, the 2x2 pattern read from the top-left pixel (ROS's naming).
    rgb = smooth_rgb()
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros(rgb.shape[:2], np.uint8)
    for i, c in enumerate(pattern):
        dy, dx = divmod(i, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    if bits == 16:
        msg = words(mosaic.astype(np.uint16) * 257, f"bayer_{pattern}16")
    else:
        msg = raw(mosaic, f"bayer_{pattern}8", pad=4)
    arr, layout = image_to_array(msg)
    assert layout == "rgb" and arr.shape == rgb.shape
    inner = (slice(2, -2), slice(2, -2))  # the border is extrapolated
    err = np.abs(arr[inner].astype(int) - rgb[inner].astype(int))
    assert err.mean() < 2 and err.max() <= 12, (err.mean(), err.max())


def words(img16, encoding, bigendian=False, pad=0):
    """A 16-bit image message (2 bytes a channel, in the byte order the message says)."""
    h, w = img16.shape[:2]
    rows = img16.reshape(h, -1).astype(">u2" if bigendian else "<u2").view(np.uint8)
    if pad:
        rows = np.hstack([rows, np.full((h, pad), 77, np.uint8)])
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1], is_bigendian=int(bigendian))
    msg.data = array.array("B", rows.tobytes())
    return msg


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("enc,make", [
    ("rgb16", lambda x: x),
    ("bgr16", lambda x: x[..., ::-1]),
    ("rgba16", lambda x: np.dstack([x, np.full(x.shape[:2], 65535, np.uint16)])),
    ("mono16", lambda x: x[..., 1]),
])
def test_16_bit_frames_read_as_full_range(rgb, enc, make, bigendian):
    # 16-bit words holding a full-range image: the high byte is the 8-bit frame (what cv_bridge
    # gives), whatever the byte order; the low byte is what a wrong byte order would show.
    rng = np.random.default_rng(2)
    img16 = rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    arr, layout = image_to_array(words(make(img16), enc, bigendian, pad=6))
    want = rgb[..., 1] if enc == "mono16" else rgb
    np.testing.assert_array_equal(to_rgb(arr, layout) if enc != "mono16" else arr, want)


def test_10_bit_data_in_16_bit_words_is_named_once(caplog):
    from seg_perception.runtime import image_conversion
    image_conversion._warned_low_bits = False
    low = np.arange(24, dtype=np.uint16).reshape(4, 6) * 40  # at most 920: a 10-bit camera's values
    with caplog.at_level("WARNING"):
        for _ in range(3):
            arr, _ = image_to_array(words(low, "mono16"))
    assert arr.max() == 3  # the high byte, as documented: nearly black
    said = [r.getMessage() for r in caplog.records if "below 4096" in r.getMessage()]
    assert len(said) == 1 and "mono16 frame" in said[0]


@pytest.mark.parametrize("enc", ["mono16", "16UC1", "rgb8"])
def test_label_images_must_hold_8_bit_ids(enc):
    # mono16 frames are scaled to 8 bits; ids 0..255 in 16-bit words would all read 0
    from seg_perception.evaluation.scoring import decode_labels
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 10]], np.uint16)
    msg = words(ids, enc) if enc != "rgb8" else raw(np.zeros((2, 4, 3), np.uint8), enc)
    with pytest.raises(ImageError, match=f"label image has encoding '{enc}'; expected mono8 class ids"):
        decode_labels(msg)
    np.testing.assert_array_equal(decode_labels(raw(ids.astype(np.uint8), "mono8", pad=2)), ids)


@pytest.mark.parametrize("fmt,ext", [("jpeg", ".jpg"), ("png", ".png"), ("rgb8; jpeg compressed bgr8", ".jpg"),
                                     ("rgb8; png compressed rgb8", ".png"), ("rgb8; jpeg compressed rgb8", ".jpg")])
def test_compressed(rgb, fmt, ext):
    # image_transport encodes BGR bytes; an encoder that says "compressed rgb8" gave the encoder RGB
    # bytes, which OpenCV decodes back in that order (image_transport's decoder keeps them as RGB)
    given_rgb = fmt.endswith("compressed rgb8")
    ok, buf = cv2.imencode(ext, rgb if given_rgb else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", buf.tobytes())
    arr, layout = compressed_to_array(msg)
    out = to_rgb(arr, layout)
    if ext == ".png":
        np.testing.assert_array_equal(out, rgb)
    else:  # lossy: exactly what OpenCV decodes, in RGB order
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(out, decoded if given_rgb else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def test_fill_image_roundtrip(rgb):
    from std_msgs.msg import Header
    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    msg = fill_image(Image(), h, rgb, "rgb8")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 10, 30, "rgb8")
    assert msg.header.stamp.sec == 12 and msg.header.frame_id == "cam"
    arr, _ = image_to_array(msg)
    np.testing.assert_array_equal(arr, rgb)


def bad_messages():
    """(name, message, expected reason) for every kind of malformed raw image."""
    ok = np.zeros((4, 6, 3), np.uint8)
    short = raw(ok, "rgb8")
    short.data = short.data[:-10]
    narrow = raw(ok, "rgb8")
    narrow.step = 6 * 3 - 1
    empty = Image(height=0, width=0, encoding="rgb8", step=0)
    huge = Image(height=100_000, width=100_000, encoding="mono8", step=100_000)
    narrow16 = words(np.zeros((4, 6), np.uint16), "mono16")
    narrow16.step = 11
    return [
        ("unknown encoding", raw(ok, "nv12"), "unsupported encoding 'nv12'"),
        ("depth image", raw(ok[..., :2], "16UC1"), "'16UC1' is a depth or measurement image, not a camera frame"),
        ("16-bit narrow step", narrow16, "step 11 is smaller than width x channels x 2 bytes = 12 for mono16"),
        ("tiny bayer", raw(np.zeros((1, 4), np.uint8), "bayer_rggb8"), "smaller than one 2x2 Bayer cell"),
        ("short data", short, "less than step x height"),
        ("narrow step", narrow, "step 17 is smaller than width x channels = 18"),
        ("zero size", empty, "is empty"),
        ("absurd size", huge, "exceeds the max_image_pixels cap"),
        ("odd yuv width", raw(np.zeros((2, 3, 2), np.uint8), "yuv422"), "odd"),
    ]


@pytest.mark.parametrize("name,msg,reason", bad_messages(), ids=[b[0] for b in bad_messages()])
def test_bad_raw_messages(name, msg, reason):
    with pytest.raises(ImageError, match=reason.replace("(", r"\(")):
        image_to_array(msg)


@pytest.mark.parametrize("pattern", ["rggb", "gbrg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_compressed_bayer_is_demosaiced_as_a_raw_one(pattern, bits):
    """image_transport compresses a Bayer camera's mosaic as it is ("bayer_rggb8; png compressed "):
    it must come out in colour, as the raw message of the same mosaic does, not as a grey mosaic."""
    mosaic = np.random.default_rng(1).integers(0, 256, (8, 12), dtype=np.uint8)
    want, layout = image_to_array(raw(mosaic, f"bayer_{pattern}8"))
    enc = f"bayer_{pattern}{bits}"
    ok, buf = cv2.imencode(".png", mosaic.astype(np.uint16) * 257 if bits == 16 else mosaic)
    msg = CompressedImage(format=f"{enc}; png compressed ")
    msg.data = array.array("B", buf.tobytes())
    arr, got_layout = compressed_to_array(msg)
    assert (got_layout, layout) == ("rgb", "rgb")
    np.testing.assert_array_equal(arr, want)


def test_compressed_16_bit_png_reads_as_full_range(rgb):
    img16 = rgb[..., ::-1].astype(np.uint16) * 256 + 255  # BGR, as image_transport's PNG holds it
    ok, buf = cv2.imencode(".png", img16)
    msg = CompressedImage(format="rgb16; png compressed bgr16")
    msg.data = array.array("B", buf.tobytes())
    arr, layout = compressed_to_array(msg)
    np.testing.assert_array_equal(to_rgb(arr, layout), rgb)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_size_is_checked_before_decoding(ext):
    """The cap is read from the PNG / JPEG header: a frame over it is refused before its pixels
    are allocated (the size below is what the header says)."""
    ok, buf = cv2.imencode(ext, np.zeros((40, 64, 3), np.uint8))
    data = np.frombuffer(buf.tobytes(), np.uint8)
    assert encoded_size(data) == (64, 40)
    msg = CompressedImage(format=ext[1:])
    msg.data = array.array("B", buf.tobytes())
    with pytest.raises(ImageError, match="image size 64x40 exceeds the max_image_pixels cap of 1000"):
        compressed_to_array(msg, max_pixels=1000)
    # a header claiming 100000 x 100000 in a small file: refused by the cap, never handed to OpenCV;
    # with the cap lifted, OpenCV's own refusal (cv2.error) is a one-line ImageError too
    png = bytearray(buf.tobytes()) if ext == ".png" else None
    if png is not None:
        png[16:24] = (100_000).to_bytes(4, "big") * 2
        png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")  # IHDR's checksum, so OpenCV reads it
        msg.data = array.array("B", bytes(png))
        with pytest.raises(ImageError, match="100000x100000 exceeds the max_image_pixels cap"):
            compressed_to_array(msg)
        with pytest.raises(ImageError, match=r"cannot be decoded \(") as e:
            compressed_to_array(msg, max_pixels=2 ** 40)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("data,fmt,reason", [
    (b"", "jpeg", "no data"),
    (b"\xff\xd8garbage" * 10, "jpeg", "cannot be decoded"),
    (b"\x00" * 10, "tiff", "unsupported compressed format"),
    (b"\x00" * 10, "16UC1; compressedDepth png", "depth"),
])
def test_bad_compressed(data, fmt, reason):
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    with pytest.raises(ImageError, match=reason):
        compressed_to_array(msg)


def test_bayer_through_ros2_jpeg_transport_is_grey_and_said_once(caplog):
    """ROS 2's compressed transport (Humble on) encodes a Bayer camera's JPEG with target mono8, the
    mosaic greyed by cv_bridge first: demosaicing that grey picture gave false colours labelled RGB.
    It is a mono frame, said once; a mosaic sent as it is (png, or ROS 1's empty target) still
    comes out in colour."""
    import seg_perception.runtime.image_conversion as ic
    grey = cv2.cvtColor(smooth_rgb(), cv2.COLOR_RGB2GRAY)
    ok, buf = cv2.imencode(".jpg", grey)
    msg = CompressedImage(format="bayer_rggb8; jpeg compressed mono8")
    msg.data = array.array("B", buf.tobytes())
    ic._warned_grey.clear()
    with caplog.at_level("WARNING", logger="seg_perception"):
        arr, layout = compressed_to_array(msg)
        compressed_to_array(msg)
    assert layout == "mono" and arr.shape == grey.shape
    assert len([r for r in caplog.records if "sent the Bayer camera's image as grey" in r.getMessage()]) == 1
    mosaic = np.random.default_rng(2).integers(0, 256, (8, 12), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", mosaic)
    msg = CompressedImage(format="bayer_rggb8; jpeg compressed ")  # ROS 1: the mosaic as it is
    msg.data = array.array("B", buf.tobytes())
    assert compressed_to_array(msg)[1] == "rgb"


def test_imports_with_an_opencv_older_than_4_6():
    """Ubuntu 22.04's python3-opencv (4.5.4, what rosdep installs for a colcon build) lacks the
    COLOR_BayerRGGB2RGB-style names: importing the conversion (so the node) failed there."""
    import subprocess
    import sys
    code = ("import cv2\n"
            "for p in ('RGGB', 'BGGR', 'GBRG', 'GRBG'):\n"
            "    for to in ('RGB', 'BGR', 'GRAY', 'RGBA', 'BGRA'):\n"
            "        if hasattr(cv2, f'COLOR_Bayer{p}2{to}'):\n"
            "            delattr(cv2, f'COLOR_Bayer{p}2{to}')\n"
            "import seg_perception.runtime.image_conversion\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_8uc4_is_bgra(rgb):
    arr, layout = image_to_array(raw(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), "8UC4"))
    np.testing.assert_array_equal(to_rgb(arr, layout), rgb)


def test_compressed_size_is_known_before_decoding_or_the_data_refused():
    """A JPEG whose frame header comes after more than 1 MB of APP segments had no size read, and a
    BMP (any format OpenCV decodes) under a 'png' format string was decoded before the cap."""
    ok, buf = cv2.imencode(".jpg", np.zeros((40, 64, 3), np.uint8))
    jpg = buf.tobytes()
    app = b"".join(b"\xff\xe2" + (65533 + 2).to_bytes(2, "big") + bytes(65533) for _ in range(18))  # 1.18 MB
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", jpg[:2] + app + jpg[2:])
    with pytest.raises(ImageError, match="image size 64x40 exceeds the max_image_pixels cap of 1000"):
        compressed_to_array(msg, max_pixels=1000)
    ok, bmp = cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))
    msg = CompressedImage(format="png")
    msg.data = array.array("B", bmp.tobytes())
    with pytest.raises(ImageError, match="neither JPEG nor PNG"):
        compressed_to_array(msg)


def test_fill_image_refuses_an_array_that_is_not_its_encoding():
    from std_msgs.msg import Header
    with pytest.raises(ValueError, match="mono8 image from a int64 array"):
        fill_image(Image(), Header(), np.zeros((5, 7), np.int64), "mono8")
    with pytest.raises(ValueError, match="rgb8 image from a uint8 array of shape"):
        fill_image(Image(), Header(), np.zeros((5, 7), np.uint8), "rgb8")


def test_a_jpeg_header_with_stray_bytes_is_still_read_before_decoding():
    """libjpeg skips stray bytes before a marker (a warning); the header reader gave up on them and the
    frame was decoded blind, its size checked only after: a 632-byte frame claiming 6000x6000 cost
    211 MiB. Now its size is read past them, and a JPEG whose size cannot be read is refused
    without decoding."""
    ok, buf = cv2.imencode(".jpg", np.zeros((40, 64, 3), np.uint8))
    raw = bytearray(buf.tobytes())
    sof = next(i for i in range(2, len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xC0)
    raw[sof + 5:sof + 9] = (6000).to_bytes(2, "big") * 2  # height, width
    stray = bytes(raw[:sof]) + b"\x00" + bytes(raw[sof:])
    assert encoded_size(np.frombuffer(stray, np.uint8)) == (6000, 6000)
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", stray)
    with pytest.raises(ImageError, match="image size 6000x6000 exceeds the max_image_pixels cap"):
        compressed_to_array(msg, max_pixels=1000)
    msg.data = array.array("B", bytes(raw[:sof]))  # cut before its frame header
    with pytest.raises(ImageError, match="cannot be decoded: its header gives no frame size before its data"):
        compressed_to_array(msg)


@pytest.mark.parametrize("enc", ["yuv422", "yuv422_yuy2"])
def test_a_colour_camera_greyed_by_humbles_jpeg_transport_is_said_once(enc, caplog):
    """Humble's compressed transport takes yuv422 for no colour and sends 'yuv422; jpeg compressed
    mono8': the frames were segmented grey without a word (only Bayer's were said)."""
    import seg_perception.runtime.image_conversion as ic
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(smooth_rgb(), cv2.COLOR_RGB2GRAY))
    msg = CompressedImage(format=f"{enc}; jpeg compressed mono8")
    msg.data = array.array("B", buf.tobytes())
    ic._warned_grey.clear()
    with caplog.at_level("WARNING", logger="seg_perception"):
        assert compressed_to_array(msg)[1] == "mono"
        compressed_to_array(msg)
    said = [r.getMessage() for r in caplog.records if "as grey" in r.getMessage()]
    assert len(said) == 1 and "the colour camera's image" in said[0] and "rgb8 or bgr8" in said[0], said
